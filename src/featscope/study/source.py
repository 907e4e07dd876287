"""A study file as plain data plus the line of every key and value, and the list of its problems."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featscope.errors import FeatscopeError, InputFileError

Where = tuple  # a place in the study: ("jobs", 0, "targets", 1)


class StudyError(FeatscopeError):
    """A study with problems; the message lists every one, each with its line, and nothing was run."""


@dataclass
class Source:
    """The study's data, where it came from (``name``, for messages), and the folder its relative paths start in."""

    data: Any
    name: str
    root: Path
    value_lines: dict[Where, int] = field(default_factory=dict)
    key_lines: dict[Where, int] = field(default_factory=dict)
    duplicates: list[tuple[Where, int]] = field(default_factory=list)  # repeated keys and their lines

    def line(self, where: Where, *, key: bool = False) -> int | None:
        """1-based line of the value at ``where`` (or of its key), else of the nearest enclosing value."""
        lines = self.key_lines if key else self.value_lines
        for end in range(len(where), -1, -1):
            place = tuple(where[:end])
            if place in lines:
                return lines[place]
            if place in self.value_lines:
                return self.value_lines[place]
        return None


def read_source(path: str | Path) -> Source:
    """Parse a study file (a YAML syntax error raises StudyError with its line; repeated keys are noted)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"study file {str(path)!r} does not exist; check the path")
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise StudyError(f"{path}:{line} not valid YAML: {error.problem or error.context}") from None
    finally:
        loader.dispose()
    source = Source(data, str(path), path.parent.resolve())
    if node is not None:
        _walk(node, (), source, source.duplicates)
    return source


def _walk(node: yaml.Node, where: Where, source: Source, duplicates: list) -> None:
    source.value_lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: the merged keys live here too
                merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for part in merged:
                    for k, v in part.value:
                        source.key_lines.setdefault((*where, str(k.value)), k.start_mark.line + 1)
                        _walk(v, (*where, str(k.value)), source, [])
                continue
            key = str(key_node.value)
            if key in seen:
                duplicates.append(((*where, key), key_node.start_mark.line + 1))
            seen.add(key)
            source.key_lines[(*where, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*where, key), source, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*where, i), source, duplicates)


def dotted(where: Sequence) -> str:
    """``("jobs", 0, "targets", 1)`` -> ``jobs[0].targets[1]``."""
    text = ""
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class Problems:
    """Every problem found in a study, reported together as one StudyError."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.found: list[tuple[int | None, str]] = []

    def add(self, where: Where, message: str, *, key: bool = False, line: int | None = None) -> None:
        line = line if line is not None else self.source.line(where, key=key)
        place = f"{self.source.name}:{line}" if line is not None else self.source.name
        self.found.append((line, f"{place}: {dotted(where) or '(top level)'}: {message}"))

    def __bool__(self) -> bool:
        return bool(self.found)

    def raise_if_any(self) -> None:
        if not self.found:
            return
        unique = list(dict.fromkeys(text for _, text in sorted(self.found, key=lambda p: p[0] or 0)))
        count = f"{len(unique)} problem{'s' if len(unique) > 1 else ''}"
        raise StudyError(f"{self.source.name}: {count}, nothing was run:\n  " + "\n  ".join(unique))
