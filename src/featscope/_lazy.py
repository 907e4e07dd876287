"""Lazy package exports: names are imported on first use, so ``featscope --help`` stays fast."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first access; a name equal
    to the module's last component is the module itself."""

    def __getattr__(name: str) -> object:
        if name in exports:
            module = import_module(exports[name])
            return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
