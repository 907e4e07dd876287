"""The keys a job entry may have: each checks and converts its value (a ValueError says what is wrong)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featscope.errors import FeatscopeError, suggest

REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One key of a job entry.

    ``parse(value, root)`` returns the checked value (``root``: the study file's folder, for relative paths)
    or raises ValueError. An ``axis`` key takes one value or a list: one job per list item. ``prefix`` puts the
    value into job folder names (``seed`` -> ``seed0``); other keys appear there only when given as a list.
    """

    parse: Callable[[Any, Path], Any]
    doc: str
    default: Any = REQUIRED
    axis: bool = False
    prefix: str | None = None
    short: Callable[[Any], str] = str


def integer(minimum: int | None = None) -> Callable[[Any, Path], int]:
    def parse(value: Any, root: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, not {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def text(value: Any, root: Path) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, not {value!r}")
    return value


def optional_text(value: Any, root: Path) -> str | None:
    return None if value is None else text(value, root)


def flag(value: Any, root: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def choice(*names: str) -> Callable[[Any, Path], str]:
    def parse(value: Any, root: Path) -> str:
        if value not in names:
            raise ValueError(f"expected one of {', '.join(names)}, not {value!r}{suggest(str(value), names)}")
        return value

    return parse


def label(value: Any, root: Path) -> int | str:
    """A class: its name, or its index."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise ValueError(f"expected a class name or index, not {value!r}")
    return value


def text_list(value: Any, root: Path) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [text(v, root) for v in items]


def number_list(value: Any, root: Path) -> list[float]:
    items = value if isinstance(value, list) else [value]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        raise ValueError(f"expected numbers, not {value!r}")
    return [float(v) for v in items]


def existing_file(value: Any, root: Path) -> str:
    """A file path, relative to the study file's folder."""
    path = root / text(value, root)
    if not path.is_file():
        raise ValueError(f"file {value!r} does not exist (paths are relative to the study file's folder: {root})")
    return str(path)


def optional_file(value: Any, root: Path) -> str | None:
    return None if value is None else existing_file(value, root)


def backbone_spec(value: Any, root: Path) -> str:
    """A backbone spec, checked by its family (no weights are loaded)."""
    from featscope.backbones import check_spec

    return _checked_spec(value, root, check_spec)


def network_spec(value: Any, root: Path) -> str:
    """An extractor spec, checked by its syntax and family (no weights are loaded)."""
    from featscope.extractors.spec import parse_spec

    return _checked_spec(value, root, parse_spec)


def _checked_spec(value: Any, root: Path, check: Callable[[str], object]) -> str:
    """``value`` as text, passed by ``check`` (which raises a FeatscopeError on a bad spec, told as ValueError)."""
    spec = text(value, root)
    try:
        check(spec)
    except FeatscopeError as error:
        raise ValueError(str(error)) from None
    return spec


def spec_short(spec: str) -> str:
    """``world:shape-net@fc`` -> ``shape-net@fc``; ``sd:/models/sd-v1-4.ckpt`` -> ``sd-v1-4``."""
    name = spec.partition(":")[2] or spec
    return Path(name).stem if "/" in name else name


def file_stem(path: str) -> str:
    return Path(path).stem


SEEDS = Field(integer(), "random seed(s); one job per seed", default=0, axis=True, prefix="seed")
BACKBONE = Field(backbone_spec, "diffusion backbone spec(s)", default="world:ddpm", axis=True, short=spec_short)
