"""Layer capture: run a module up to one of its layers and return that layer's activation."""

from __future__ import annotations

import torch
from torch import nn


class _Captured(Exception):
    """Raised by the capture hook once the layer has run: the rest of the network is skipped."""


def layer_activation(module: nn.Module, x: torch.Tensor, layer: str, *, inputs: bool = False) -> torch.Tensor | None:
    """The output (or, with ``inputs``, the first input) of ``module.layer`` when ``module`` runs on ``x``.

    The forward pass stops at the layer. None when the layer does not run (the caller names the mistake).
    """
    captured: list[torch.Tensor] = []

    def keep(value) -> None:
        captured.append(value[0] if isinstance(value, tuple) else value)
        raise _Captured

    target = module.get_submodule(layer)
    if inputs:
        handle = target.register_forward_pre_hook(lambda _m, args: keep(args))
    else:
        handle = target.register_forward_hook(lambda _m, _args, output: keep(output))
    try:
        module(x)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0] if captured else None
