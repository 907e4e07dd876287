"""Studies: many jobs (method x targets x networks x seeds x settings) from one YAML file, sharded over ranks.

::

    from featscope.study import run_study
    result = run_study("examples/study.yaml")      # resumable; torchrun shards the jobs
    result.summary["done"], result.out

See docs/batch-and-report.md for the study file's keys. Names are imported lazily (``featscope --help`` stays fast).
"""

from featscope._lazy import lazy_getattr

_EXPORTS = {
    "METHODS": "featscope.study.methods",
    "Method": "featscope.study.methods",
    "Job": "featscope.study.plan",
    "Study": "featscope.study.plan",
    "load_study": "featscope.study.plan",
    "StudyResult": "featscope.study.runner",
    "run_study": "featscope.study.runner",
    "StudyError": "featscope.study.source",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr("featscope.study", _EXPORTS)
