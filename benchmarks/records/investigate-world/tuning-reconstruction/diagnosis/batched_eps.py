# ruff: noqa  -- an ad hoc diagnosis, kept as it was run (README.md)
import torch
from featscope.backbones import load_backbone
b = load_backbone("world:ddpm", device="cpu")
z = torch.randn(1, 3, 32, 32)
c = b.encode_prompt(["circle"]); u = b.encode_prompt([""])
with torch.no_grad():
    e_u = b.eps(z, 900, u); e_c = b.eps(z, 900, c)
    both = b.eps(torch.cat([z, z]), 900, torch.cat([u, c]))
print("batched vs separate max diff", float((both[0]-e_u[0]).abs().max()), float((both[1]-e_c[0]).abs().max()))
print("eps_c - eps_u norm", float((e_c-e_u).norm()), "eps norm", float(e_c.norm()))
print(type(b.unet).__name__, b.unet.training)
