"""Reports of a source (a run folder, a folder of runs or a study .yaml): a page on disk, a notebook fragment."""

from __future__ import annotations

from pathlib import Path

from featscope.report.folders import RunSet, collect
from featscope.report.html import SORT_SCRIPT, STYLE, counts, metrics_table, page
from featscope.runs import atomic_write_text


def write_report(
    source: str | Path, out: str | Path | None = None, *, title: str | None = None, max_side: int = 256
) -> Path:
    """Write the report of ``source`` (a run folder, a folder of runs or a study .yaml) to ``out``
    (default: ``report.html`` in the run or output folder); images larger than ``max_side`` are shrunk."""
    runset = collect(source)
    path = Path(out) if out is not None else runset.root / "report.html"
    return atomic_write_text(path, page(runset, title=title, max_side=max_side))


def runs_html(source: str | Path | RunSet, max_side: int = 256) -> str:
    """An HTML fragment (for notebooks' ``_repr_html_``): the sortable metrics table of a folder of runs."""
    runset = source if isinstance(source, RunSet) else collect(source)
    return (
        f'<div class="fs"><style>{STYLE}</style>{counts(runset)}{metrics_table(runset.runs, max_side)}'
        f"<script>{SORT_SCRIPT}</script></div>"
    )
