"""Settings dataclasses whose every field is declared once, with its help text, paper symbol and flag.

A field declared with :func:`knob` carries its documentation in ``dataclasses.field`` metadata; the command
line (:func:`add_options`), study files and ``config.yaml`` are derived from the dataclass, so a knob is never
re-typed elsewhere::

    @dataclass(frozen=True)
    class MyConfig(Settings):
        guidance_weight: float = knob(0.1, "weight of the rescaled gradient", symbol="w_g", aliases=("--wg",))
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from featscope.errors import FeatscopeError, invalid_choice, suggest

S = TypeVar("S", bound="Settings")


@dataclass(frozen=True)
class Knob:
    """The documentation of one settings field: what the user reads in ``--help`` and in the docs."""

    help: str
    symbol: str | None = None  # the paper's symbol (w_g, K, T, ...), also the short name in study job folders
    flag: str | None = None  # the long option; default: --field-name
    aliases: tuple[str, ...] = ()  # more option strings (--wg, -K)
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    cli: bool = True  # False: a Python/study-only setting, not a command-line option
    # how the command line (and a study's text value) spells the value: text -> value, ValueError if it cannot be
    # read (e.g. comma_separated(float): "25,250" -> (25.0, 250.0)); with choices, the text is one of them
    parse: Callable[[str], Any] | None = None


def knob(
    default: Any,
    help: str,
    *,
    symbol: str | None = None,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    metavar: str | None = None,
    choices: tuple[Any, ...] | None = None,
    cli: bool = True,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field with its documentation (see :class:`Knob`)."""
    return field(default=default, metadata={"knob": Knob(help, symbol, flag, aliases, metavar, choices, cli, parse)})


def comma_separated(kind: type = str) -> Callable[[str], tuple]:
    """The ``parse`` of a list knob: ``"a,b"`` -> ``("a", "b")``, ``"25,250"`` -> ``(25.0, 250.0)`` with
    ``kind=float``; blank items are dropped (``""`` -> ``()``)."""
    what = {str: "names", float: "numbers", int: "integers"}.get(kind, kind.__name__)

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
        except ValueError:
            raise ValueError(f"takes comma-separated {what}, not {text!r}") from None

    parse.__name__ = f"comma-separated {what}"
    return parse


def knob_of(f: Field) -> Knob:
    """The documentation of a settings field (a plain field gets its name as help)."""
    return f.metadata.get("knob") or Knob(f.name.replace("_", " "))


class Settings:
    """Mixin for frozen settings dataclasses: checked keyword overrides and derived documentation."""

    def with_overrides(self: S, **overrides: Any) -> S:
        """A copy with ``overrides`` applied; unknown names and non-finite numbers are an error, None values keep
        the current value."""
        known = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise FeatscopeError(
                f"unknown solver setting {unknown[0]!r}{suggest(unknown[0], known)} for {type(self).__name__}; "
                f"known: {', '.join(known)}"
            )
        for name, value in overrides.items():
            if isinstance(value, float) and not math.isfinite(value):
                flag = knob_of({f.name: f for f in fields(self)}[name]).flag or "--" + name.replace("_", "-")
                raise FeatscopeError(f"setting {name} ({flag}) is {value}; give a finite number")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        """Raise FeatscopeError for an impossible combination (subclasses check their fields)."""

    def to_dict(self) -> dict[str, Any]:
        """Every field's value (what ``config.yaml`` records)."""
        return asdict(self)

    @classmethod
    def symbols(cls) -> dict[str, str]:
        """Field name -> the paper's symbol, for the fields that have one."""
        return {f.name: knob_of(f).symbol for f in fields(cls) if knob_of(f).symbol}


def resolve(
    cls: type[S],
    config: S | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    presets: Mapping[str, S] | None = None,
) -> S:
    """The settings a call runs with: ``config`` (an instance, a preset name or None for the defaults), then
    ``overrides`` (None values ignored), validated."""
    if config is None:
        base = cls()
    elif isinstance(config, str):
        presets = presets or {}
        if config not in presets:
            raise FeatscopeError(
                f"unknown preset {config!r}{suggest(config, list(presets))}; known presets: {', '.join(presets)}"
            )
        base = presets[config]
    elif isinstance(config, cls):
        base = config
    else:
        raise FeatscopeError(f"config must be a {cls.__name__} or a preset name, not {type(config).__name__}")
    result = base.with_overrides(**dict(overrides or {}))
    result.validate()
    return result


_TYPES = {"int": int, "float": float, "str": str}


def _option_type(annotation: str) -> tuple[type | None, bool]:
    """(the argparse type, whether the field is a bool) of a field annotation such as ``float | None``."""
    kinds = [k.strip() for k in str(annotation).split("|") if k.strip() != "None"]
    if kinds == ["bool"]:
        return None, True
    return _TYPES.get(kinds[0], str) if kinds else str, False


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[Settings],
    *,
    exclude: tuple[str, ...] = (),
    defaults: Settings | None = None,
) -> list[str]:
    """Add one option per command-line knob of ``cls`` (default None: unset options leave the preset's value).

    The help line shows the paper's symbol and the default of ``defaults`` (or of ``cls()``) unless it is None
    or empty (the help says what those mean). Returns the field names added, for :func:`given_options`.
    """
    base = defaults if defaults is not None else cls()
    names = []
    for f in fields(cls):
        k = knob_of(f)
        if f.name in exclude or not k.cli:
            continue
        kind, is_bool = _option_type(f.type)
        flag = k.flag or "--" + f.name.replace("_", "-")
        symbol = f"[{k.symbol}] " if k.symbol else ""
        default = spelled(k, getattr(base, f.name))
        shown = "" if default in (None, "") else f" (default: {default})"  # the help says what None or "" mean
        text = f"{symbol}{k.help}{shown}".replace("%", "%%")
        extra: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        metavar = k.metavar or (k.symbol or f.name).upper().replace(" ", "_")
        if k.parse is not None:  # the knob reads its own text (and checks its choices there)
            choices = "{" + ",".join(k.choices) + "}" if k.choices is not None else None
            extra.update(type=_reader(k), metavar=k.metavar or choices or metavar)
        elif is_bool:
            extra["action"] = argparse.BooleanOptionalAction
        else:
            extra.update(type=kind, metavar=metavar)
            if k.choices is not None:
                extra.update(choices=k.choices, metavar=None)
        parser.add_argument(flag, *k.aliases, **extra)
        names.append(f.name)
    return names


def spelled(k: Knob, value: Any) -> Any:
    """A value as the command line spells it: a list comma-separated (``""`` when empty), the choice that a knob
    with ``parse`` and ``choices`` reads as ``value``; anything else as it is."""
    if k.parse is not None and k.choices is not None:
        return next((c for c in k.choices if k.parse(c) == value), value)
    if isinstance(value, (tuple, list)):
        return ",".join(format(v, "g") if isinstance(v, float) else str(v) for v in value)
    return value


def _reader(k: Knob) -> Callable[[str], Any]:
    """The argparse ``type`` of a knob with ``parse``: its choices checked on the text, its errors one line."""

    def read(text: str) -> Any:
        if k.choices is not None and text not in k.choices:
            raise argparse.ArgumentTypeError(invalid_choice(text, k.choices))
        try:
            return k.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return read


def plain_value(f: Field, value: Any) -> Any:
    """A settings field's value from a file (YAML or JSON: numbers, text, true/false, null, lists), checked
    against the field's type and converted: text through the knob's ``parse`` (its command-line spelling, e.g.
    ``"25,250"``), an integer for a float, a list (or one item) for a tuple. ValueError says what is wrong."""
    k = knob_of(f)
    kinds = [kind.strip() for kind in str(f.type).split("|")]
    if value is None:
        if "None" in kinds:
            return None
        raise ValueError(f"expected {_described(kinds)}, not null")
    if k.choices is not None and (isinstance(value, str) or k.parse is None) and value not in k.choices:
        raise ValueError(invalid_choice(value, k.choices))
    if isinstance(value, str) and k.parse is not None:
        value = k.parse(value)
    for kind in (kind for kind in kinds if kind != "None"):
        converted = _as_kind(kind, value)
        if converted is not _MISMATCH:
            return converted
    raise ValueError(f"expected {_described(kinds)}, not {value!r}")


_MISMATCH = object()
_NAMES = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false"}


def _as_kind(kind: str, value: Any) -> Any:
    """``value`` as the annotation ``kind`` (``int``, ``float``, ``str``, ``bool``, ``tuple[X, ...]``), else
    :data:`_MISMATCH`."""
    if kind.startswith("tuple["):
        item = kind[6:].split(",")[0].strip()
        items = [_as_kind(item, v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        return _MISMATCH if _MISMATCH in items else tuple(items)
    if isinstance(value, bool):
        return value if kind == "bool" else _MISMATCH
    if kind == "int":
        return value if isinstance(value, int) else _MISMATCH
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) else _MISMATCH
    if kind == "str":
        return os.fspath(value) if isinstance(value, (str, os.PathLike)) else _MISMATCH
    return _MISMATCH


def _described(kinds: list[str]) -> str:
    names = []
    for kind in kinds:
        if kind.startswith("tuple["):
            item = kind[6:].split(",")[0].strip()
            names.append(f"a list of {_NAMES.get(item, item).removeprefix('a ').removeprefix('an ')}s")
        else:
            names.append("null" if kind == "None" else _NAMES.get(kind, kind))
    return " or ".join(names)


def given_options(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The options of ``names`` the user set on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
