# ruff: noqa  -- an ad hoc diagnosis, kept as it was run (README.md)
import torch, time, sys
from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.inversion import ddim_invert, regenerate, null_text_invert
from featscope.world.splits import split_images
from featscope.world.readout import compare
torch.manual_seed(0)
b = load_backbone("world:ddpm", device="cpu")
arr, recs = split_images(2, "tuning")
img = to_tensor(arr)[1:2]
def l2(z):
    x = b.decode(z).float().clamp(0,1).cpu()
    r = compare(img, x)[0]
    return round(float((x-img).pow(2).mean().sqrt()),4), sorted(r["changed"]) if r and r["valid"] else r and r["reason"]
for prompt in ["circle", recs[1].caption()]:
    path = ddim_invert(b, img, prompt, 20)
    print(prompt, "ddim + cond-only regen", l2(regenerate(b, path[-1], prompt, guidance_scale=1.0, num_steps=20)), flush=True)
    print(prompt, "ddim + cfg3 regen empty uncond", l2(regenerate(b, path[-1], prompt, guidance_scale=3.0, num_steps=20)), flush=True)
    for inner in (10, 50):
        tic=time.time()
        x_t, nt = null_text_invert(b, img, prompt, 20, 3.0, inner, quiet=True)
        print(prompt, "null-text inner", inner, l2(regenerate(b, x_t, prompt, nt, guidance_scale=3.0)), round(time.time()-tic), flush=True)
