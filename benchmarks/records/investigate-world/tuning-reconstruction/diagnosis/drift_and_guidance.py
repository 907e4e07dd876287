# ruff: noqa  -- an ad hoc diagnosis, kept as it was run (README.md)
import torch, time
import torch.nn.functional as F
from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.inversion import ddim_invert, ddim_schedule, ddim_move, guided_eps, null_text_invert, regenerate
from featscope.world.splits import split_images
from featscope.world.readout import compare
b = load_backbone("world:ddpm", device="cpu")
arr, recs = split_images(2, "tuning")
img = to_tensor(arr)[1:2]
def l2(z):
    x = b.decode(z).float().clamp(0,1).cpu()
    r = compare(img, x)[0]
    return round(float((x-img).pow(2).mean().sqrt()),4), sorted(r["changed"]) if r and r["valid"] else r and r["reason"]
prompt = "circle"
x_t, nt = null_text_invert(b, img, prompt, 20, 3.0, 10, quiet=True)
path = ddim_invert(b, img, prompt, 20)
s = ddim_schedule(b, 20, inverted=True)
cond = b.encode_prompt([prompt])
z = x_t
with torch.no_grad():
    for i, t in enumerate(s.timesteps):
        target = path[19 - i]
        # the fitted step from the *inverted* state (what the fit optimised) and from the running state
        e_fit = guided_eps(b, path[20 - i], t, cond, nt[i], 3.0)
        one, _ = ddim_move(path[20 - i], e_fit, s.abar[i], s.abar_prev[i])
        e = guided_eps(b, z, t, cond, nt[i], 3.0)
        z, _ = ddim_move(z, e, s.abar[i], s.abar_prev[i])
        print(i, t, "one-step from path", f"{float(F.mse_loss(one, target)):.2e}", "running", f"{float(F.mse_loss(z, target)):.2e}", "tol", f"{1e-5 + i*2e-5:.1e}", flush=True)
for g in (1.5, 2.0):
    x_t, nt = null_text_invert(b, img, prompt, 20, g, 10, quiet=True)
    print("guidance", g, l2(regenerate(b, x_t, prompt, nt, guidance_scale=g)), flush=True)
