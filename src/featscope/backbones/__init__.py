"""Diffusion backbones from spec strings: ``sd:`` and ``sdxl:`` (HUB_ID|FOLDER|FILE), ``sd3:`` and ``flux:``
(HUB_ID|FOLDER), ``pixel:FOLDER`` and plugins' families (``world:NAME`` from the embedded world's plugin). Every
family, built-in or a plugin's, is an entry of ``featscope.registry`` (built-in ones: ``BUILTIN_BACKBONES``), whose
loader is imported when the family's first model is loaded."""

from __future__ import annotations

from pathlib import Path

import torch

from featscope import registry
from featscope.backbones.base import Backbone
from featscope.errors import SpecError, suggest

# the spec form of every built-in family (read from the registry's BUILTIN_BACKBONES)
FAMILIES = {name: family.usage for name, family in registry.builtin_backbones().items()}

__all__ = ["FAMILIES", "Backbone", "check_spec", "families", "load_backbone"]


def families() -> dict[str, str]:
    """The spec form of every backbone family: the built-in ones (``FAMILIES``), then the plugins'."""
    return {name: family.usage for name, family in registry.backbone_families().items()}


def check_spec(spec: str) -> tuple[str, str]:
    """``spec`` as (family, model name), checked without loading anything: a SpecError names the problem."""
    family, colon, source = spec.partition(":")
    entry = registry.backbone_family(family) if colon else None
    if entry is None:
        usages = families()
        names = [f"{name}:" for name in usages]
        raise SpecError(
            f"unknown backbone family in {spec!r}; use {'; '.join(usages.values())}{suggest(family + ':', names)}"
        )
    if not source:
        raise SpecError(f"backbone {spec!r} names no model; use {entry.usage}")
    if entry.names is not None and source not in entry.names:
        specs = [f"{family}:{name}" for name in entry.names]
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
    entry = registry.backbone_family(family)
    if config is not None and not entry.takes_config:
        takers = " and ".join(f"{name}:" for name, f in registry.backbone_families().items() if f.takes_config)
        raise SpecError(f"a backbone config (--backbone-config) only applies to {takers} checkpoints, not {spec!r}")
    options = {"config": config} if entry.takes_config else {}
    return entry.load(source, spec=spec, dtype=dtype, **options).to(device)
