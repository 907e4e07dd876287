"""Steering: edit a feature map (add a concept direction, mix two maps, scale channels) and reconstruct."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from featscope.backbones import Backbone
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor
from featscope.featinv.config import SampleSettings
from featscope.featinv.features import from_grid, to_grid
from featscope.featinv.metrics import position_cosine
from featscope.featinv.model import FeatInvModel, grid_channels
from featscope.featinv.reconstruction import load_parts, reconstruct
from featscope.images import load_image

EDITS = ("add", "mix", "scale")
DEFAULT_STRENGTHS = {"add": (0.0, 0.5, 1.0, 1.5, 2.0), "mix": (0.0, 0.25, 0.5, 0.75, 1.0), "scale": (1.0, 0.5, 0.0)}
REGIONS = ("all", "left", "right", "top", "bottom")


@dataclass
class Edit:
    """An edit of a (1, C, H, W) grid map, applied with a strength s.

    add:   f + s * direction at the masked positions (direction: (C,))
    mix:   f + s * mask * (other - f)   (s = 1: the other map inside the mask, e.g. a left/right composite)
    scale: the chosen channels multiplied by s at the masked positions (s = 0 zeroes them)
    """

    kind: str
    mask: torch.Tensor  # (H, W) in [0, 1]
    direction: torch.Tensor | None = None
    other: torch.Tensor | None = None
    channels: list[int] | None = None

    def apply(self, grid: torch.Tensor, strength: float) -> torch.Tensor:
        mask = self.mask.to(grid)
        if self.kind == "add":
            return grid + strength * self.direction.to(grid).view(1, -1, 1, 1) * mask
        if self.kind == "mix":
            return grid + strength * mask * (self.other.to(grid) - grid)
        chosen = torch.zeros(grid.shape[1], device=grid.device, dtype=grid.dtype)
        chosen[self.channels] = 1
        factor = 1 + (strength - 1) * chosen.view(1, -1, 1, 1) * mask
        return grid * factor


def half(n: int) -> torch.Tensor:
    """The first half of ``n`` cells: 1 before the middle, 0 after, 0.5 on the middle cell of an odd ``n``."""
    mask = (torch.arange(n) < n // 2).float()
    if n % 2:
        mask[n // 2] = 0.5
    return mask


def region_mask(region: str, grid: tuple[int, int]) -> torch.Tensor:
    """An (H, W) mask on the feature grid: all, left, right, top, bottom, rows:cols as ``R0:R1,C0:C1``, or a
    mask image file (white = inside), resized to the grid. The halves split the grid evenly: on an odd grid
    the middle column (row) is half in each, so left + right = 1 everywhere (a 9-wide grid: 4.5 columns each)."""
    h, w = grid
    mask = torch.zeros(h, w)
    if region == "all":
        mask[:] = 1
    elif region in ("left", "right"):
        mask[:] = half(w)
        mask = mask if region == "left" else 1 - mask
    elif region in ("top", "bottom"):
        mask[:] = half(h)[:, None]
        mask = mask if region == "top" else 1 - mask
    elif Path(region).suffix:
        image = load_image(region).mean(1, keepdim=True)
        mask = F.interpolate(image, size=grid, mode="bilinear", align_corners=False)[0, 0]
    else:
        try:
            rows, cols = (tuple(int(v) for v in part.split(":")) for part in region.split(","))
        except ValueError:
            raise FeatscopeError(
                f"unknown region {region!r}; use {', '.join(REGIONS)}, R0:R1,C0:C1 (grid cells) or a mask image"
            ) from None
        mask[slice(*rows), slice(*cols)] = 1
    if mask.sum() == 0:
        raise FeatscopeError(f"region {region!r} selects no position of the {h}x{w} feature grid")
    return mask


def concept_direction(concept: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Direction (C,) from the source map's mean to the concept maps' mean (grids (K, C, H, W), (1, C, H, W))."""
    return concept.mean((0, 2, 3)) - source.mean((0, 2, 3))


def make_edit(
    model: FeatInvModel,
    kind: str,
    feature: torch.Tensor,
    *,
    region: str = "all",
    concept: torch.Tensor | None = None,
    direction: torch.Tensor | None = None,
    other: torch.Tensor | None = None,
    channels: list[int] | None = None,
) -> Edit:
    """An ``Edit`` of one feature map (in the model's layout): ``concept`` maps or a ``direction`` (C,) for add,
    ``other`` (a second image's map) for mix, ``channels`` for scale; ``region`` says where."""
    if kind not in EDITS:
        raise FeatscopeError(f"unknown edit {kind!r}; use {', '.join(EDITS)}")
    layout, c = model.config.layout, model.config.channels
    grid = to_grid(grid_channels(feature, model, "to edit"), layout)
    mask = region_mask(region, tuple(grid.shape[-2:]))
    if kind == "add":
        if direction is None and concept is None:
            raise FeatscopeError("an add edit needs a concept (images or feature maps) or a direction (C,) file")
        if direction is None:
            direction = concept_direction(to_grid(grid_channels(concept, model, "of the concept"), layout), grid)
        direction = direction.float().flatten()
        if direction.numel() != c:
            raise FeatscopeError(f"the direction has {direction.numel()} values; the model's maps have {c} channels")
        return Edit(kind, mask, direction=direction)
    if kind == "mix":
        if other is None:
            raise FeatscopeError("a mix edit needs a second image or feature map (--other)")
        other_grid = to_grid(grid_channels(other, model, "to mix in"), layout)
        if other_grid.shape != grid.shape:
            raise FeatscopeError(f"cannot mix maps of shapes {tuple(grid.shape)} and {tuple(other_grid.shape)}")
        return Edit(kind, mask, other=other_grid)
    if not channels or any(not 0 <= ch < c for ch in channels):
        raise FeatscopeError(f"a scale edit needs channels in 0..{c - 1} (--channels 0,5), not {channels}")
    return Edit(kind, mask, channels=list(channels))


@dataclass
class SteerResult:
    """Reconstructions of one feature map edited with growing strength, and how well each keeps its edit."""

    images: torch.Tensor  # (S, 3, H, W) in [0, 1], on the CPU: one per strength, all from the same seed
    strengths: list[float]
    edited: torch.Tensor  # (S, C, H, W): the edited maps as grids
    cosine_median_to_edited: list[float]  # per strength: median per-position cosine of the image's map to the edit


def steer(
    model: FeatInvModel,
    feature: torch.Tensor,
    edit: Edit,
    strengths: list[float] | tuple[float, ...],
    *,
    backbone: Backbone | None = None,
    extractor: Extractor | None = None,
    settings: SampleSettings | None = None,
    quiet: bool = True,
) -> SteerResult:
    """Reconstruct one feature map edited with each strength, all from the same seed, and score each image's map
    against the edited one (the backbone and network named in the model's config are loaded when not given)."""
    settings = settings or SampleSettings()
    backbone, extractor = load_parts(model, backbone=backbone, extractor=extractor)
    feature = grid_channels(feature.float(), model, "to edit")[:1]
    layout = model.config.layout
    grid = to_grid(feature, layout)
    grids = [edit.apply(grid, float(s)) for s in strengths]
    edited = torch.cat([from_grid(g, layout, feature) for g in grids])
    seeds = [settings.seed] * len(strengths)
    images = reconstruct(model, edited, backbone=backbone, settings=settings, seeds=seeds, quiet=quiet).images
    edited_grids = torch.cat(grids).cpu()
    with torch.no_grad():
        realised = to_grid(extractor.target_features(images.to(extractor.mean.device)).float().cpu(), layout)
    cosine = position_cosine(realised, edited_grids).tolist()
    return SteerResult(images, [float(s) for s in strengths], edited_grids, cosine)
