"""Writing a report page to disk."""

from __future__ import annotations

from pathlib import Path

from featscope.report.folders import collect
from featscope.report.html import page
from featscope.runs import atomic_write_text


def write_report(
    source: str | Path, out: str | Path | None = None, *, title: str | None = None, max_side: int = 256
) -> Path:
    """Write the report of ``source`` (a run folder, a folder of runs or a study .yaml) to ``out``
    (default: ``report.html`` in the run or output folder); images larger than ``max_side`` are shrunk."""
    runset = collect(source)
    path = Path(out) if out is not None else runset.root / "report.html"
    return atomic_write_text(path, page(runset, title=title, max_side=max_side))
