"""Studies: many jobs (method x targets x networks x seeds x settings) from one YAML file, sharded over ranks.

::

    from featscope.study import run_study
    result = run_study("examples/study.yaml")      # resumable; torchrun shards the jobs
    result.summary["done"], result.out

See docs/batch-and-report.md for the study file's keys. Names are imported lazily (``featscope --help`` stays fast).
"""

from importlib import import_module

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


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featscope.study' has no attribute {name!r}")
