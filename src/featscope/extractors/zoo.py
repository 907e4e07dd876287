"""Resolving extractor specs into Extractors, and listing a network's layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from featscope import registry
from featscope.errors import FeatscopeError, SpecError
from featscope.extractors.base import Extractor
from featscope.extractors.checkpoint import one_line
from featscope.extractors.spec import Spec, parse_spec

EXTRAS: dict[str, str] = {"timm": "timm", "open_clip": "clip"}  # optional package -> featscope extra
LISTING_SIZE = (224, 224)  # dummy input size for networks that take any size


def load_extractor(
    spec: str, *, weights: str | Path | None = None, device: str | torch.device = "cpu", pretrained: bool = True
) -> Extractor:
    """The network under study named by ``spec``, with its published weights (or ``weights``, a local file).

    ``pretrained=False`` builds the architecture with random weights (same cost: for benchmarks).

    Specs: ``clip:ARCH``, ``torchvision:NAME``, ``timm:NAME``, ``open_clip:ARCH/TAG_OR_PATH``,
    ``module.path:factory``, ``file.py:factory`` or a plugin's ``FAMILY:NAME`` (e.g. ``world:shape-net``), each
    optionally followed by ``@LAYER`` and by ``@SIZEpx`` (the input size, e.g. ``timm:convnext_base@stages.3@288px``).
    Every failure is a one-line FeatscopeError.
    """
    return _build(parse_spec(spec), weights, pretrained=pretrained).to(device)


def list_layers(spec: str, *, weights: str | Path | None = None) -> list[tuple[str, str, tuple | None]]:
    """``(name, module type, output shape without the batch dimension)`` of every module of the network.

    Shapes come from hooks on one forward pass of a dummy image; they are None for modules that do not run
    (or whose output is not a tensor). Published weights are not needed: the architecture alone is built.
    """
    extractor = _build(parse_spec(spec), weights, pretrained=False).set_layer(None)
    modules = [(name, module) for name, module in extractor.network.named_modules() if name]
    shapes: dict[str, tuple] = {}

    def recorder(name: str):
        def hook(_module, _inputs, output):
            output = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, tuple(output.shape[1:]))

        return hook

    handles = [module.register_forward_hook(recorder(name)) for name, module in modules]
    try:
        with torch.no_grad():
            extractor(torch.zeros(1, 3, *(extractor.input_size or LISTING_SIZE)))
    except Exception as error:  # the network rejects the dummy image
        raise SpecError(f"cannot run {extractor.name} on a dummy image: {one_line(error)}") from error
    finally:
        for handle in handles:
            handle.remove()
    return [(name, type(module).__name__, shapes.get(name)) for name, module in modules]


def _build(spec: Spec, weights: str | Path | None, *, pretrained: bool) -> Extractor:
    """Dispatch to the family's loader in the registry; ``pretrained=False`` skips fetching published weights."""
    path = None if weights is None else str(weights)
    extractor = _loader(spec)(spec, path, pretrained)
    return extractor.with_input_size(spec.size) if spec.size else extractor


def _loader(spec: Spec) -> Callable[..., Extractor]:
    """The registered loader of ``spec``'s family, imported; a missing optional package names its extra."""
    family = registry.extractor_family(spec.family)
    if family is None:
        raise SpecError(f"unknown extractor family {spec.family!r} in {spec.base!r}")
    try:
        return registry.resolve(family.loader)
    except FeatscopeError as error:
        missing = error.__cause__
        if isinstance(missing, ImportError) and missing.name in EXTRAS:
            raise SpecError(
                f"{spec.base} needs the {missing.name} package: pip install 'featscope[{EXTRAS[missing.name]}]'"
            ) from missing
        raise
