"""Tiny networks under study for tests, loadable as the user's own network: ``tiny_nets:tiny_cnn``."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn() -> tuple[nn.Module, dict]:
    """A small random CNN with a pooled 16-d output; named layers conv1, act1, conv2, pool."""
    torch.manual_seed(1234)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("act1", nn.Tanh())
    net.add_module("conv2", nn.Conv2d(8, 4, 3, stride=2, padding=1))
    net.add_module("pool", nn.AdaptiveAvgPool2d(2))
    net.add_module("flat", nn.Flatten())
    return net, {"input_size": 16, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
