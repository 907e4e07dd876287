"""Speed and memory switches for the networks a solver differentiates through.

- ``channels_last``: NHWC memory layout for every conv network (faster convolutions on recent GPUs with
  fp16/bf16; usually no gain on CPUs).
- ``compile``: ``torch.compile`` of the UNet, the decoder and the network under study (a one-off compile
  cost, then faster iterations; needs a C++ compiler on CPU).
- ``low_memory``: gradient checkpointing, so the activations of one guided pass are recomputed in the backward
  pass instead of kept: less peak memory, more time. The UNet uses diffusers' own (per resnet and transformer
  block); the VAE, whose activations at 512 px dominate, is checkpointed twice over: per block (diffusers'),
  and inside each block per resnet, attention and up/downsampling layer (:func:`checkpoint_layers`), so its
  backward pass holds one block's layer inputs and one layer's activations at a time.

They change the models in place, so the same loaded backbone and extractor keep them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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


VAE_LAYERS = ("ResnetBlock2D", "Attention", "Upsample2D", "Downsample2D")  # checkpointed one by one


def _networks(backbone: Backbone, extractor: Extractor | None) -> list[nn.Module]:
    modules = [backbone.unet, backbone.vae, extractor.network if extractor is not None else None]
    return [m for m in modules if m is not None]


def apply_speed(backbone: Backbone, extractor: Extractor | None, options: SpeedOptions) -> None:
    """Turn the switches of ``options`` on for the backbone's networks and the extractor's network."""
    if options.channels_last:
        for module in _networks(backbone, extractor):
            module.to(memory_format=torch.channels_last)
    if options.low_memory:
        if hasattr(backbone.unet, "enable_gradient_checkpointing"):
            backbone.unet.enable_gradient_checkpointing()
        if backbone.vae is not None:  # per block (diffusers), and inside each block per layer
            backbone.vae.enable_gradient_checkpointing()
            checkpoint_layers(backbone.vae, VAE_LAYERS)
    if options.compile:
        for module in _networks(backbone, extractor):
            module.compile()


def checkpoint_layers(model: nn.Module, kinds: tuple[str, ...]) -> int:
    """Checkpoint every submodule of ``model`` whose class name is in ``kinds``: while gradients are on, its
    forward keeps only its inputs and is run again in the backward pass. Returns how many were wrapped
    (already wrapped ones are left as they are); the weights and the state dict do not change."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in kinds and not getattr(module, "_featscope_checkpointed", False):
            module.forward = _checkpointed(module.forward)
            module._featscope_checkpointed = True
            count += 1
    return count


def _checkpointed(forward):
    def run(*args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    return run
