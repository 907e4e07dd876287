"""The feature-map adapter that replaces a ControlNet's image-conditioning embedding (FeatInv's hint block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from featscope.featinv.features import to_grid


class FeatureAdapter(nn.Module):
    """Feature map -> the residual added to the ControlNet's first conv output.

    bilinear upsample to the latent grid (align_corners=False), 3x3 conv C -> width, SiLU, 3x3 conv
    width -> width, SiLU, zero-initialised 3x3 conv width -> the first block's channels.
    """

    def __init__(self, channels: int, width: int, out_channels: int, grid: tuple[int, int], layout: str) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.layout = layout
        self.block = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.block[-1].weight)
        nn.init.zeros_(self.block[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid = to_grid(features, self.layout)
        grid = F.interpolate(grid.to(self.block[0].weight.dtype), size=self.grid, mode="bilinear", align_corners=False)
        return self.block(grid)
