"""Feature-map layouts: which axes of a network's feature are channels and which are the spatial grid."""

from __future__ import annotations

import math

import torch

from featscope.errors import FeatscopeError

LAYOUTS = ("nchw", "nhwc", "tokens", "patches")
# nchw: (C, H, W); nhwc: channels-last (H, W, C); tokens: (1 + H*W, D), a class token first (dropped);
# patches: (H*W, D) with no class token. Shapes are per image (no batch axis).


def _square(n: int) -> int | None:
    side = math.isqrt(n)
    return side if side * side == n and side > 1 else None


def detect_layout(shape: tuple[int, ...], what: str) -> str:
    """The layout of a per-image feature ``shape``; refuses features with no spatial map (pooled, 1x1, logits)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3:
        a, b, c = shape
        layout = "nhwc" if a == b and b != c else "nchw"
        if grid_of(shape, layout) != (1, 1):
            return layout
    elif len(shape) == 2 and (_square(shape[0] - 1) or _square(shape[0])):
        return "tokens" if _square(shape[0] - 1) else "patches"
    raise FeatscopeError(
        f"{what} gives features of shape {shape}, which hold no spatial map; a feature-map ControlNet needs a "
        "(C, H, W), (H, W, C) or token (1+H*W, D) map larger than 1x1: pick a convolutional or transformer-block "
        "layer (list them with: featscope layers SPEC)"
    )


def channels_of(shape: tuple[int, ...], layout: str) -> int:
    """Number of channels of a per-image feature ``shape`` in ``layout``."""
    return int(shape[0] if layout == "nchw" else shape[-1])


def grid_of(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(H, W) of the spatial grid of a per-image feature ``shape`` in ``layout``."""
    if layout == "nchw":
        return int(shape[1]), int(shape[2])
    if layout == "nhwc":
        return int(shape[0]), int(shape[1])
    side = math.isqrt(shape[0] - (layout == "tokens"))
    return side, side


def to_grid(features: torch.Tensor, layout: str) -> torch.Tensor:
    """A batch of features (B, ...) in ``layout`` -> (B, C, H, W); token maps lose their class token."""
    if layout == "nchw":
        return features
    if layout == "nhwc":
        return features.movedim(-1, 1)
    tokens = features[:, 1:] if layout == "tokens" else features
    side = math.isqrt(tokens.shape[1])
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


def from_grid(grid: torch.Tensor, layout: str, like: torch.Tensor) -> torch.Tensor:
    """The inverse of ``to_grid``: (B, C, H, W) back to ``layout`` (token maps take their class token from ``like``)."""
    if layout == "nchw":
        return grid
    if layout == "nhwc":
        return grid.movedim(1, -1)
    tokens = grid.flatten(2).transpose(1, 2)
    return torch.cat([like[:, :1], tokens], dim=1) if layout == "tokens" else tokens
