"""Prediction with the ControlNet's residuals, and the reconstruction loop (DDIM, eta 0, classifier-free guidance)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from featscope.backbones import Backbone
from featscope.featinv.model import FeatInvModel
from featscope.progress import tqdm
from featscope.sampling import cfg_blend


def controlled_output(
    model: FeatInvModel,
    backbone: Backbone,
    z: torch.Tensor,
    t: torch.Tensor,
    text: torch.Tensor,
    features: torch.Tensor,
    scale: float = 1.0,
) -> torch.Tensor:
    """The frozen UNet's raw output (its prediction type) with the ControlNet's residuals added.

    ``text`` is the backbone's conditioning (``Backbone.encode_prompt``; SDXL's packs pooled embedding and time
    ids), unpacked by ``Backbone.unet_kwargs`` for the ControlNet (in ``z``'s dtype) and the UNet alike.
    """
    control = _cast(backbone.unet_kwargs(text), z.dtype)
    down, mid = model(z, t, control.pop("encoder_hidden_states"), features, scale, **control)
    dtype = backbone.dtype
    return backbone.unet(
        z.to(dtype),
        t,
        **_cast(backbone.unet_kwargs(text), dtype),
        down_block_additional_residuals=[d.to(dtype) for d in down],
        mid_block_additional_residual=mid.to(dtype),
    ).sample.to(z.dtype)


def _cast(kwargs: dict, dtype: torch.dtype) -> dict:
    """The UNet's conditioning keywords (tensors, and dicts of tensors) in ``dtype``."""
    return {k: _cast(v, dtype) if isinstance(v, dict) else v.to(dtype) for k, v in kwargs.items()}


def initial_noise(backbone: Backbone, generators: list[torch.Generator]) -> torch.Tensor:
    """One seeded noise state per sample: a sample's image does not depend on its batch."""
    shape = backbone.latent_shape
    noise = [torch.randn(shape, generator=g, device=g.device) for g in generators]
    return torch.stack(noise).to(backbone.device, torch.float32)


@torch.no_grad()
def sample(
    model: FeatInvModel,
    backbone: Backbone,
    features: torch.Tensor,
    generators: list[torch.Generator],
    *,
    num_steps: int = 50,
    guidance_scale: float = 1.75,
    conditioning_scale: float = 1.0,
    prompt: str | None = None,
    negative_prompt: str = "",
    quiet: bool = True,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] from feature maps (B, ...): DDIM with eta 0.

    Guidance: eps = eps(z, f, negative) + w (eps(z, f, prompt) - eps(z, f, negative)); the negative
    branch keeps the feature map and drops only the text (FeatInv's sampling). Skipped when w = 1 or the
    two prompts are equal. ``callback(i, t, z)`` runs after each step.
    """
    prompt = model.config.prompt if prompt is None else prompt
    batch = features.shape[0]
    scheduler = backbone.make_scheduler("ddim", num_steps)
    z = initial_noise(backbone, generators) * scheduler.init_noise_sigma
    features = features.to(backbone.device, torch.float32)
    guided = guidance_scale != 1.0 and prompt != negative_prompt
    texts = [negative_prompt, prompt] if guided else [prompt]
    text = backbone.encode_prompt(texts).float()
    text = text.repeat_interleave(batch, dim=0)
    control = features.repeat(len(texts), *[1] * (features.dim() - 1))
    for i, t in enumerate(tqdm(scheduler.timesteps, disable=quiet, desc="featinv reconstruct")):
        z_in = z.repeat(len(texts), 1, 1, 1)
        step = torch.full((z_in.shape[0],), int(t), device=z.device, dtype=torch.long)
        output = controlled_output(model, backbone, z_in, step, text, control, conditioning_scale)
        eps = backbone.eps_from_output(output, z_in, step)
        if guided:
            uncond, cond = eps.chunk(2)
            eps = cfg_blend(uncond, cond, guidance_scale)
        z = scheduler.step(eps, t, z, eta=0.0).prev_sample
        if callback is not None:
            callback(i, int(t), z)
    return backbone.decode(z).clamp(0, 1)
