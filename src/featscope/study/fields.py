"""The keys a job entry may have: each checks and converts its value (a ValueError says what is wrong)."""

from __future__ import annotations

import dataclasses
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


def existing_file(value: Any, root: Path) -> str:
    """A file path, relative to the study file's folder."""
    path = root / text(value, root)
    if not path.is_file():
        raise ValueError(f"file {value!r} does not exist (paths are relative to the study file's folder: {root})")
    return str(path)


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


# -- the keys derived from a settings dataclass's knobs --------------------------------------------
def knob_fields(cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, Field]:
    """One job key per knob of the settings dataclass ``cls`` (not an axis; unset or null: the method's default):
    a value as the command line spells it (``"25,250"``, ``down``) or as YAML (``[25, 250]``, ``false``); a file or
    folder relative to the study file's folder."""
    from featscope.settings import knob_of

    return {
        f.name: Field(_knob_parse(f), knob_of(f).help, None) for f in dataclasses.fields(cls) if f.name not in exclude
    }


def _knob_parse(f: dataclasses.Field) -> Callable[[Any, Path], Any]:
    from featscope.settings import plain_value

    place = PLACES.get(f.name)

    def parse(value: Any, root: Path) -> Any:
        try:
            value = plain_value(f, value)
            return place(value, root) if place is not None and value is not None else value
        except FeatscopeError as error:
            raise ValueError(str(error)) from None

    return parse


def _local(value: str, root: Path) -> str:
    """A model given as a folder (relative to the study's folder when it is there) or a hub id (kept)."""
    path = root / value
    return str(path) if path.exists() else value


def mask_value(value: str, root: Path) -> str:
    """``none``, a generated mask (``cross-attention[:T|:otsu]``, ``sam:FOLDER``) or a PNG file."""
    from featscope.investigate.settings import NO_MASK, parse_mask

    spec = parse_mask(value)
    if value == NO_MASK or (spec is not None and spec.kind != "sam"):
        return value
    return f"sam:{_local(spec.source, root)}" if spec is not None else existing_file(value, root)


def existing_folder(value: Any, root: Path) -> str:
    """A folder path, relative to the study file's folder."""
    path = root / text(value, root)
    if not path.is_dir():
        raise ValueError(f"folder {value!r} does not exist (paths are relative to the study file's folder: {root})")
    return str(path)


PLACES: dict[str, Callable[[Any, Path], Any]] = {  # knobs that name files or folders
    "mask": mask_value,
    "images_folder": existing_folder,
    "caption_model": _local,
    "namer": lambda value, root: f"vlm:{_local(value[4:], root)}" if value.startswith("vlm:") else value,
}
