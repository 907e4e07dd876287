"""Plain (unguided) sampling from a backbone, with optional classifier-free guidance on prompts."""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from featscope.backbones.base import Backbone


def cfg_blend(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_u + scale * (eps_c - eps_u)`` (scale 1 = the conditional prediction)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


@torch.no_grad()
def sample(
    backbone: Backbone,
    generators: list[torch.Generator],
    *,
    prompts: list[str] | None = None,
    num_steps: int = 50,
    sampler: str = "ddim",
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """One image per generator, (B, 3, H, W) in [0, 1]; ``prompts`` default to the empty prompt."""
    batch = len(generators)
    device = backbone.device
    scheduler = backbone.make_scheduler(sampler, num_steps)
    cond = uncond = None
    if backbone.has_prompts:
        cond = backbone.encode_prompt(prompts or [""] * batch)
        if guidance_scale != 1.0:
            uncond = backbone.encode_prompt([""] * batch)
    z = randn_tensor((batch, *backbone.latent_shape), generator=generators, device=device, dtype=torch.float32)
    z = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = backbone.eps(z, int(t), cond)
        if uncond is not None:
            eps_u = backbone.eps(z, int(t), uncond)
            eps = cfg_blend(eps_u, eps, guidance_scale)
        z = scheduler.step(eps, t, z, generator=generators).prev_sample
    return backbone.decode(z).clamp(0, 1)
