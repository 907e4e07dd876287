# ruff: noqa  -- an ad hoc diagnosis, kept as it was run (README.md)
import torch, time
from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.inversion import regenerate, null_text_invert
from featscope.world.splits import split_images
from featscope.world.readout import compare
b = load_backbone("world:ddpm", device="cpu")
arr, recs = split_images(4, "tuning")
imgs = to_tensor(arr)
e0 = b.encode_prompt([""]); e1 = b.encode_prompt(["circle"]); e2 = b.encode_prompt([recs[1].caption()])
print("emb shapes", e0.shape, "std", float(e0.std()), float(e2.std()), "uncond-cond dist", float((e0-e2).norm()), flush=True)
def l2(img, z):
    x = b.decode(z).float().clamp(0,1).cpu()
    r = compare(img, x)[0]
    return round(float((x-img).pow(2).mean().sqrt()),4), sorted(r["changed"]) if r and r["valid"] else r and r["reason"]
for i in (1, 3):
    img = imgs[i:i+1]; prompt = recs[i].shape
    for lr, inner in ((1e-1, 10), (1.0, 10)):
        tic=time.time()
        x_t, nt = null_text_invert(b, img, prompt, 20, 3.0, inner, lr=lr, quiet=True)
        print(i, prompt, "lr", lr, "inner", inner, l2(img, regenerate(b, x_t, prompt, nt, guidance_scale=3.0)), round(time.time()-tic), flush=True)
