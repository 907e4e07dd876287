"""The user's own network: ``module.path:factory`` or ``/path/to/file.py:factory``.

The factory takes no arguments and returns an ``nn.Module``, or ``(module, options)`` where options may
hold ``input_size`` (int or (H, W)), ``mean``, ``std``, ``quantize``, ``text_encoder`` and ``labels``.
Without them the network gets images at their own size, normalised with ImageNet statistics.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from featscope.errors import InputFileError, SpecError, suggest
from featscope.extractors.base import Extractor
from featscope.extractors.checkpoint import load_weights, one_line
from featscope.extractors.spec import Spec

OPTIONS = ("input_size", "mean", "std", "quantize", "text_encoder", "labels")


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """The network made by the user's factory, with ``weights`` (a state dict file) loaded into it if given."""
    location, _, factory_name = spec.name.rpartition(":")
    module = _import_file(location) if spec.family == "file" else _import_module(location)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise SpecError(f"{location} has no factory {factory_name!r}{suggest(factory_name, names)}")
    try:
        made = factory()
    except Exception as error:  # the user's code
        raise SpecError(f"factory {spec.name} failed: {one_line(error)}") from error
    network, options = made if isinstance(made, tuple) and len(made) == 2 else (made, {})
    if not isinstance(network, nn.Module) or not isinstance(options, dict):
        raise SpecError(f"factory {spec.name} must return an nn.Module or (nn.Module, dict), not {type(made).__name__}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise SpecError(
            f"factory {spec.name} returned unknown options {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
        )
    if isinstance(options.get("input_size"), int):
        options = {**options, "input_size": (options["input_size"], options["input_size"])}
    if weights is not None:
        load_weights(network, weights, what=spec.name)
    return Extractor(network, name=spec.base, layer=spec.layer, **options)


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as error:  # the user's code
        raise SpecError(f"cannot import {name}: {one_line(error)}") from error


def _import_file(location: str) -> ModuleType:
    path = Path(location).expanduser().resolve()
    if not path.is_file():
        raise InputFileError(f"network file {path} does not exist")
    name = f"featscope_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's code
        del sys.modules[name]
        raise SpecError(f"cannot import {path}: {one_line(error)}") from error
    return module
