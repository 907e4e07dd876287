"""Studies: many jobs (method x targets x networks x seeds x settings) from one YAML file, shared among processes.

::

    from featscope.study import run_study
    result = run_study("examples/study.yaml")      # resumable; torchrun ranks or SLURM tasks share the jobs
    result.summary["done"], result.out

See docs/batch-and-report.md for the study file's keys. Names are imported lazily (``featscope --help`` stays fast).
"""

from featscope._lazy import exported_names, lazy_getattr

_EXPORTS = {  # module -> the names it exports, imported on first access
    "featscope.study.methods": ("METHODS", "Method"),
    "featscope.study.plan": ("Job", "Study", "load_study"),
    "featscope.study.runner": ("StudyResult", "run_study"),
    "featscope.study.source": ("StudyError",),
}

__all__ = exported_names(_EXPORTS)


__getattr__ = lazy_getattr("featscope.study", _EXPORTS)
