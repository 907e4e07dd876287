"""User-facing errors: each is a mistake the user can fix, shown by the CLI as one line (exit 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FeatscopeError(Exception):
    """A user mistake (bad spec, bad file, bad option). The message says what and how to fix it."""


class SpecError(FeatscopeError):
    """A model spec string that cannot be resolved."""


class InputFileError(FeatscopeError):
    """A missing, unreadable or malformed input file."""


class RunExistsError(FeatscopeError):
    """The output folder already holds a run."""


def suggest(name: str, known: Iterable[str], limit: int = 5) -> str:
    """A short 'did you mean' clause for ``name`` among ``known`` (empty when nothing is close)."""
    close = difflib.get_close_matches(name, list(known), n=limit, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""
