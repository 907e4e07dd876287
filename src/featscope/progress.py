"""Progress bars that suit where the output goes.

On a terminal (or in a notebook) this is tqdm's bar. When stderr goes to a file or a CI log, carriage-return
updates would pile up into hundreds of lines, so the bar instead prints one plain line at the start, at each
further 10% of the work (or after 30 s without a line) and at the end.
"""

from __future__ import annotations

import sys
import time

from tqdm import autonotebook, std
from tqdm.auto import tqdm as _auto_tqdm

LINE_EVERY_SECONDS = 30.0
LINE_EVERY_SHARE = 0.1
LINE_FORMAT = "{desc}: {percentage:3.0f}% ({n_fmt}/{total_fmt} {unit}) {elapsed} elapsed, {remaining} left{postfix}"


def _to_terminal(stream) -> bool:
    if autonotebook.tqdm is not std.tqdm:  # a notebook: its widget
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class tqdm(_auto_tqdm):  # noqa: N801 (a drop-in for tqdm.auto.tqdm)
    """``tqdm.auto.tqdm`` with plain, throttled lines when the output is not a terminal."""

    def __init__(self, *args, **kwargs) -> None:
        self._terminal = _to_terminal(kwargs.get("file") or sys.stderr)
        self._last_line = -float("inf")
        self._next_share = 0.0
        self._closing = False
        self._last_n = -1
        if not self._terminal:
            kwargs.update(mininterval=0, miniters=1, dynamic_ncols=False, bar_format=LINE_FORMAT)
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if self._terminal:
            return super().display(msg, pos)
        if msg == "":  # a request to clear the bar: nothing to clear on a plain stream
            return True
        now = time.time()
        share = self.n / self.total if self.total else 0.0
        due = share >= self._next_share or now - self._last_line >= LINE_EVERY_SECONDS
        if (due or self._closing) and self.n != self._last_n:
            self.fp.write((msg if msg is not None else str(self)).strip() + "\n")
            self.fp.flush()
            self._last_line, self._last_n = now, self.n
            while self._next_share <= share:
                self._next_share += LINE_EVERY_SHARE
        return True

    def close(self) -> None:
        if self._terminal or self.disable:
            return super().close()
        self._closing = True
        with self._lock:
            self.display()
        self.disable = True
        self._decr_instances(self)
