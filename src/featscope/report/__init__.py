"""HTML reports of runs: one self-contained page (works offline) for a run, a folder of runs or a study.

::

    from featscope.report import write_report
    write_report("runs/study")          # -> runs/study/report.html

Names are imported lazily (``featscope --help`` stays fast).
"""

from featscope._lazy import lazy_getattr

_EXPORTS = {
    "Run": "featscope.report.folders",
    "RunSet": "featscope.report.folders",
    "collect": "featscope.report.folders",
    "page": "featscope.report.html",
    "runs_html": "featscope.report.write",
    "write_report": "featscope.report.write",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr("featscope.report", _EXPORTS)
