"""Diffusion backbones from spec strings: ``sd:HUB_ID|FOLDER|FILE``, ``sdxl:``, ``sd3:``, ``flux:`` (HUB_ID|FOLDER),
``pixel:FOLDER``, ``world:NAME``."""

from __future__ import annotations

from pathlib import Path

import torch

from featscope.backbones.base import Backbone
from featscope.backbones.flow import load_flux, load_sd3
from featscope.backbones.latent import load_sd
from featscope.backbones.pixel import load_pixel, load_world
from featscope.backbones.sdxl import load_sdxl
from featscope.errors import SpecError, suggest

FAMILIES = {
    "sd": "sd:HUB_ID, sd:FOLDER or sd:FILE.ckpt|.safetensors (Stable Diffusion)",
    "sdxl": "sdxl:HUB_ID or sdxl:FOLDER (SDXL, Turbo, fine-tunes)",
    "sd3": "sd3:HUB_ID or sd3:FOLDER (Stable Diffusion 3 / 3.5)",
    "flux": "flux:HUB_ID or flux:FOLDER (Flux.1)",
    "pixel": "pixel:FOLDER (a pixel-space diffusers model)",
    "world": "world:ddpm (the embedded world model)",
}

__all__ = ["FAMILIES", "Backbone", "load_backbone"]


def load_backbone(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: str | Path | None = None,
) -> Backbone:
    """Load the diffusion model named by ``spec`` (see ``FAMILIES``) onto ``device`` with weights in ``dtype``.

    ``config`` (CLI ``--backbone-config``): a diffusers folder or hub id with the component configs of an
    ``sd:`` single-file checkpoint, for checkpoints whose architecture diffusers cannot infer.
    """
    family, colon, source = spec.partition(":")
    if not colon or family not in FAMILIES:
        names = [f"{name}:" for name in FAMILIES]
        raise SpecError(
            f"unknown backbone family in {spec!r}; use {'; '.join(FAMILIES.values())}{suggest(family + ':', names)}"
        )
    if not source:
        raise SpecError(f"backbone {spec!r} names no model; use {FAMILIES[family]}")
    if config is not None and family != "sd":
        raise SpecError(f"a backbone config (--backbone-config) only applies to sd: checkpoints, not {spec!r}")
    if family == "sd":
        backbone = load_sd(source, spec=spec, dtype=dtype, config=config)
    elif family == "sdxl":
        backbone = load_sdxl(source, spec=spec, dtype=dtype)
    elif family == "sd3":
        backbone = load_sd3(source, spec=spec, dtype=dtype)
    elif family == "flux":
        backbone = load_flux(source, spec=spec, dtype=dtype)
    elif family == "pixel":
        backbone = load_pixel(source, spec=spec, dtype=dtype)
    else:
        backbone = load_world(source, spec=spec, dtype=dtype)
    return backbone.to(device)
