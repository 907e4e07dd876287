"""Speed and memory switches for the networks a solver differentiates through.

- ``channels_last``: NHWC memory layout for every conv network (faster convolutions on recent GPUs with
  fp16/bf16; usually no gain on CPUs).
- ``compile``: ``torch.compile`` of the UNet, the decoder and the network under study (a one-off compile
  cost, then faster iterations; needs a C++ compiler on CPU).
- ``low_memory``: gradient checkpointing of the UNet and the VAE (diffusers' own), so the activations of
  one guided pass are recomputed in the backward pass instead of kept: less peak memory, more time.

They change the models in place, so the same loaded backbone and extractor keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from featscope.backbones.base import Backbone
from featscope.extractors.base import Extractor


@dataclass(frozen=True)
class SpeedOptions:
    """Which speed and memory switches are on; all off by default (the published setting)."""

    channels_last: bool = False
    compile: bool = False
    low_memory: bool = False

    def names(self) -> list[str]:
        """The switches that are on, e.g. ``["channels_last"]``."""
        return [name for name, on in vars(self).items() if on]


def _networks(backbone: Backbone, extractor: Extractor | None) -> list[nn.Module]:
    modules = [backbone.unet, backbone.vae, extractor.network if extractor is not None else None]
    return [m for m in modules if m is not None]


def apply_speed(backbone: Backbone, extractor: Extractor | None, options: SpeedOptions) -> None:
    """Turn the switches of ``options`` on for the backbone's networks and the extractor's network."""
    if options.channels_last:
        for module in _networks(backbone, extractor):
            module.to(memory_format=torch.channels_last)
    if options.low_memory:
        for module in (backbone.unet, backbone.vae):
            if module is not None:
                module.enable_gradient_checkpointing()
    if options.compile:
        for module in _networks(backbone, extractor):
            module.compile()
