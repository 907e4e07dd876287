"""Parsing of extractor specs: ``FAMILY:NAME[@LAYER][@SIZEpx]``, ``module.path:factory``, ``file.py:factory``.

``@SIZEpx`` (``@288px``, or ``@HxWpx``) sets the network's input size: images are resized to it before the
network (default: the size its published preprocessing uses).

Families are the registry's: featscope's own (``featscope.registry.BUILTIN_EXTRACTORS``) and the plugins'
(``world:`` among them)."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

from featscope import registry
from featscope.errors import SpecError, suggest

USER_FAMILIES = ("module", "file")  # user factories (module.path:factory, file.py:factory): unlisted in the registry
SIZE = re.compile(r"@(\d+)(?:x(\d+))?px$")  # a trailing input size: @288px or @HxWpx


@dataclass(frozen=True)
class Spec:
    """A parsed spec. ``family`` is a registered family (featscope's or a plugin's), ``"module"`` or ``"file"``
    (user factories)."""

    family: str
    name: str
    layer: str | None = None
    size: tuple[int, int] | None = None  # (H, W) input size set by @SIZEpx

    @property
    def base(self) -> str:
        """The spec without its layer, e.g. ``clip:RN50``."""
        return self.name if self.family in USER_FAMILIES else f"{self.family}:{self.name}"


def size_suffix(size: tuple[int, int] | None) -> str:
    """The spec suffix of an input size: ``@288px``, ``@224x320px``, or empty for None."""
    if size is None:
        return ""
    h, w = size
    return f"@{h}px" if h == w else f"@{h}x{w}px"


def parse_spec(spec: str) -> Spec:
    """Split a spec into family, name, layer and input size (``@SIZEpx``, last); see ``_parse``."""
    text = spec.strip()
    match = SIZE.search(text)
    if match is None:
        return _parse(spec, text, None)
    h, w = int(match[1]), int(match[2] or match[1])
    if not (h and w):
        raise SpecError(f"bad input size in {spec!r}; write @SIZEpx with a positive SIZE, e.g. @288px")
    return _parse(spec, text[: match.start()], (h, w))


def _parse(spec: str, text: str, size: tuple[int, int] | None) -> Spec:
    """Family, name and layer of ``text`` (``spec`` without its size); a plugin family's known names are
    checked, the built-in families validate their names when they load (a built-in family is found without
    importing plugins)."""
    head, at, layer = text.rpartition("@")
    if at and "/" not in layer and ":" not in layer:
        if not layer:
            raise SpecError(f"empty layer in {spec!r}; write {head}@LAYER or drop the '@'")
        text = head
    else:
        layer = None
    path, colon, factory = text.rpartition(":")
    if colon and path.endswith(".py"):
        return Spec("file", f"{path}:{_factory_name(factory, spec)}", layer, size)
    family, colon, name = text.partition(":")
    if not colon or not family or not name:
        raise SpecError(f"bad extractor spec {spec!r}; expected {usage()}")
    entry = registry.extractor_family(family)
    if entry is not None and entry.listed:
        if entry.names is not None and name not in entry.names:
            raise SpecError(
                f"unknown {family} network {f'{family}:{name}'!r}{suggest(name, entry.names)} "
                f"(known: {', '.join(entry.names)})"
            )
        return Spec(family, name, layer, size)
    if _is_module(family):
        return Spec("module", f"{family}:{_factory_name(name, spec)}", layer, size)
    hint = f"; if {family} is your module, make it importable (e.g. PYTHONPATH=.)" if family.isidentifier() else ""
    known = family_names()
    raise SpecError(
        f"unknown extractor family {family!r} in {spec!r}{suggest(family, known)} (expected {usage()}){hint}"
    )


def family_names() -> list[str]:
    """Every extractor family written ``FAMILY:NAME``: the built-in ones, then the plugins'."""
    return [name for name, entry in registry.extractor_families().items() if entry.listed]


def usage() -> str:
    """The spec forms, every family named."""
    forms = " / ".join(entry.usage for entry in registry.extractor_families().values() if not entry.listed)
    return f"FAMILY:NAME[@LAYER][@SIZEpx] with FAMILY one of {', '.join(family_names())}, or {forms}"


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
