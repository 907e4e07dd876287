"""User-facing errors: each is a mistake the user can fix, shown by the CLI as one line (exit 2)."""

from __future__ import annotations

import difflib
import re
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


class RunBusyError(FeatscopeError):
    """The output folder is being written by another run (a live process holds its claim)."""


class OutputError(FeatscopeError, OSError):
    """An output that cannot be created or written (a full disk, a read-only or missing place); an OSError with
    the original's errno and file name."""

    @classmethod
    def of(cls, error: OSError, path: str | None = None) -> OutputError:
        """The OutputError of ``error``, naming ``path`` (by default the file that ``error`` names)."""
        return cls(error.errno, error.strerror or reason(error), path if path is not None else error.filename)

    def __str__(self) -> str:
        where = f" {self.filename}" if self.filename else ""
        return (
            f"cannot write{where} ({self.strerror}); choose another --out or free disk space; "
            "no partial result was kept"
        )


WEB_ADDRESS = re.compile(r"""['"<(]?\b(?:https?|ftp)://[^\s'">)]*['">)]?""")


def reason(exc: BaseException) -> str:
    """An exception's type and the first sentence of its message, without web addresses, for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0].split(". ")[0][:200] if lines else ""
    first = " ".join(WEB_ADDRESS.sub("the server", first).split())
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def invalid_choice(value: object, choices: Iterable[object]) -> str:
    """One line for a value that is not among ``choices``: the choices and the nearest one."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.0)
    nearest = f"; the nearest is {close[0]!r}" if close else ""
    return f"invalid choice {str(value)!r} (choose from {', '.join(names)}){nearest}"
