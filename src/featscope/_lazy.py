"""Lazy package exports: names are imported on first use, so ``featscope --help`` stays fast."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def exported_names(exports: dict[str, tuple[str, ...]]) -> list[str]:
    """Every name of ``exports`` (module -> the names it exports), in order: a package's ``__all__``."""
    return [name for names in exports.values() for name in names]


def lazy_getattr(package: str, exports: dict[str, tuple[str, ...]]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports a name's module (``exports``: module -> the names it exports) on
    first access; a name equal to the module's last component is the module itself."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        if name in module_of:
            module = import_module(module_of[name])
            return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
