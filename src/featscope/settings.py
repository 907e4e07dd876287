"""A shared base for solver settings: frozen dataclasses that take keyword overrides."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import TypeVar

from featscope.errors import FeatscopeError

S = TypeVar("S", bound="Overridable")


class Overridable:
    """Mixin for frozen dataclasses: ``with_overrides(**kw)`` checks names and ignores None values."""

    def with_overrides(self: S, **overrides) -> S:
        unknown = set(overrides) - set(asdict(self))
        if unknown:
            raise FeatscopeError(f"unknown solver setting(s) {sorted(unknown)}; known: {sorted(asdict(self))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
