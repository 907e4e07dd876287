"""Studies: many jobs (method x targets x networks x seeds x settings) from one YAML file, sharded over ranks.

::

    from featscope.study import run_study
    result = run_study("examples/study.yaml")      # resumable; torchrun shards the jobs
    result.summary["done"], result.out

See docs/batch-and-report.md for the study file's keys. Names are imported lazily (``featscope --help`` stays fast).
"""

from featscope._lazy import by_module, lazy_getattr

_EXPORTS = by_module(
    {
        "featscope.study.methods": ("METHODS", "Method"),
        "featscope.study.plan": ("Job", "Study", "load_study"),
        "featscope.study.runner": ("StudyResult", "run_study"),
        "featscope.study.source": ("StudyError",),
    }
)

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr("featscope.study", _EXPORTS)
