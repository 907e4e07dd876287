"""Parsing of extractor specs: ``FAMILY:NAME[@LAYER]``, ``module.path:factory``, ``file.py:factory``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from featscope.errors import SpecError, suggest

FAMILIES: tuple[str, ...] = ("clip", "torchvision", "timm", "open_clip", "world")
USAGE = "FAMILY:NAME[@LAYER] with FAMILY one of " + ", ".join(FAMILIES) + ", or module.path:factory / file.py:factory"


@dataclass(frozen=True)
class Spec:
    """A parsed spec. ``family`` is one of FAMILIES, ``"module"`` or ``"file"`` (user factories)."""

    family: str
    name: str
    layer: str | None = None

    @property
    def base(self) -> str:
        """The spec without its layer, e.g. ``clip:RN50``."""
        return f"{self.family}:{self.name}" if self.family in FAMILIES else self.name


def parse_spec(spec: str) -> Spec:
    """Split a spec into family, name and layer (validation of the name is left to the family)."""
    text = spec.strip()
    head, at, layer = text.rpartition("@")
    if at and "/" not in layer and ":" not in layer:
        if not layer:
            raise SpecError(f"empty layer in {spec!r}; write {head}@LAYER or drop the '@'")
        text = head
    else:
        layer = None
    path, colon, factory = text.rpartition(":")
    if colon and path.endswith(".py"):
        return Spec("file", f"{path}:{_factory_name(factory, spec)}", layer)
    family, colon, name = text.partition(":")
    if not colon or not family or not name:
        raise SpecError(f"bad extractor spec {spec!r}; expected {USAGE}")
    if family in FAMILIES:
        return Spec(family, name, layer)
    if _is_module(family):
        return Spec("module", f"{family}:{_factory_name(name, spec)}", layer)
    hint = f"; if {family} is your module, make it importable (e.g. PYTHONPATH=.)" if family.isidentifier() else ""
    raise SpecError(
        f"unknown extractor family {family!r} in {spec!r}{suggest(family, FAMILIES)} (expected {USAGE}){hint}"
    )


def _factory_name(name: str, spec: str) -> str:
    if not name.isidentifier():
        raise SpecError(f"bad factory name {name!r} in {spec!r}; expected module.path:factory or file.py:factory")
    return name


def _is_module(name: str) -> bool:
    """Whether ``name`` is an importable dotted module path (without importing it)."""
    if not all(part.isidentifier() for part in name.split(".")):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
