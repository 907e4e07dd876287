"""HTML reports of runs: one self-contained page (works offline) for a run, a folder of runs or a study.

::

    from featscope.report import write_report
    write_report("runs/study")          # -> runs/study/report.html

Names are imported lazily (``featscope --help`` stays fast).
"""

from featscope._lazy import exported_names, lazy_getattr

_EXPORTS = {  # module -> the names it exports, imported on first access
    "featscope.report.folders": ("Run", "RunSet", "collect"),
    "featscope.report.html": ("page",),
    "featscope.report.write": ("runs_html", "write_report"),
}

__all__ = exported_names(_EXPORTS)


__getattr__ = lazy_getattr("featscope.report", _EXPORTS)
