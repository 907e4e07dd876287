"""Diffusion backbones from spec strings: ``sd:`` and ``sdxl:`` (HUB_ID|FOLDER|FILE), ``sd3:`` and ``flux:``
(HUB_ID|FOLDER), ``pixel:FOLDER`` and plugins' families (``world:NAME`` from the embedded world's plugin; see
``featscope.registry``)."""

from __future__ import annotations

from pathlib import Path

import torch

from featscope import registry
from featscope.backbones.base import Backbone
from featscope.backbones.flow import load_flux, load_sd3
from featscope.backbones.latent import load_sd
from featscope.backbones.pixel import load_pixel
from featscope.backbones.sdxl import load_sdxl
from featscope.errors import SpecError, suggest

FAMILIES = {
    "sd": "sd:HUB_ID, sd:FOLDER or sd:FILE.ckpt|.safetensors (Stable Diffusion)",
    "sdxl": "sdxl:HUB_ID, sdxl:FOLDER or sdxl:FILE.safetensors (SDXL, Turbo, fine-tunes)",
    "sd3": "sd3:HUB_ID or sd3:FOLDER (Stable Diffusion 3 / 3.5)",
    "flux": "flux:HUB_ID or flux:FOLDER (Flux.1)",
    "pixel": "pixel:FOLDER (a pixel-space diffusers model)",
}

_LOADERS = {"sd3": load_sd3, "flux": load_flux, "pixel": load_pixel}

__all__ = ["FAMILIES", "Backbone", "check_spec", "families", "load_backbone"]


def families() -> dict[str, str]:
    """The spec form of every backbone family: the built-in ones (``FAMILIES``), then the plugins'."""
    plugins = registry.backbone_families()
    return FAMILIES | {name: family.usage for name, family in plugins.items() if name not in FAMILIES}


def check_spec(spec: str) -> tuple[str, str]:
    """``spec`` as (family, model name), checked without loading anything: a SpecError names the problem."""
    family, colon, source = spec.partition(":")
    usages = FAMILIES if colon and family in FAMILIES else families()
    if not colon or family not in usages:
        names = [f"{name}:" for name in usages]
        raise SpecError(
            f"unknown backbone family in {spec!r}; use {'; '.join(usages.values())}{suggest(family + ':', names)}"
        )
    if not source:
        raise SpecError(f"backbone {spec!r} names no model; use {usages[family]}")
    known = None if family in FAMILIES else registry.backbone_families()[family].names
    if known is not None and source not in known:
        specs = [f"{family}:{name}" for name in known]
        raise SpecError(f"unknown {family} model {source!r}; known: {', '.join(specs)}{suggest(spec, specs)}")
    return family, source


def load_backbone(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: str | Path | None = None,
) -> Backbone:
    """Load the diffusion model named by ``spec`` (see ``families()``) onto ``device`` with weights in ``dtype``.

    ``config`` (CLI ``--backbone-config``): a diffusers folder or hub id with the component configs of an
    ``sd:`` or ``sdxl:`` single-file checkpoint, for checkpoints whose architecture diffusers cannot infer.
    """
    family, source = check_spec(spec)
    if config is not None and family not in ("sd", "sdxl"):
        raise SpecError(
            f"a backbone config (--backbone-config) only applies to sd: and sdxl: checkpoints, not {spec!r}"
        )
    if family == "sd":
        backbone = load_sd(source, spec=spec, dtype=dtype, config=config)
    elif family == "sdxl":
        backbone = load_sdxl(source, spec=spec, dtype=dtype, config=config)
    elif family in _LOADERS:
        backbone = _LOADERS[family](source, spec=spec, dtype=dtype)
    else:
        backbone = registry.backbone_families()[family].load(source, spec=spec, dtype=dtype)
    return backbone.to(device)
