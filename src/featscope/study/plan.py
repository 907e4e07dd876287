"""A study file checked as a whole and expanded into its jobs (the grid of every job entry)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from featscope.datasets import safe_id
from featscope.errors import FeatscopeError, suggest
from featscope.orchestration import unique_ids
from featscope.settings import plain_value
from featscope.study.fields import REQUIRED, Field, text
from featscope.study.methods import METHODS, Method, check_settings
from featscope.study.source import Problems, Source, read_source

TOP_KEYS = {
    "name": "the study's name (default: the file's name)",
    "out": "output folder, relative to the study file (default: runs/<name> beside it)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N; under torchrun auto is each rank's GPU",
    "jobs": "the job entries: each expands into a grid of jobs",
}
ENTRY_KEYS = ("method", "name", "settings", "sweep")


@dataclass(frozen=True)
class Job:
    """One job: its folder name under the study's ``out``, its method, one value per key, its solver settings."""

    index: int
    job_id: str
    method: str
    params: dict
    settings: dict
    line: int | None = None


@dataclass(frozen=True)
class Study:
    """A checked study: where its jobs go and every job, in a fixed order (job i runs on rank i % world size)."""

    name: str
    out: Path
    device: str
    jobs: list[Job]
    source: str


def load_study(study: str | Path | dict, *, out: str | Path | None = None) -> Study:
    """Read and check a study (a YAML file, or the same structure as a dict) and expand its grid into jobs.

    Every problem in the whole study is collected first; any problem raises one StudyError that lists them all
    with their line numbers. ``out`` replaces the study's output folder.
    """
    if isinstance(study, dict):
        source = Source(study, "<study>", Path.cwd())
        default_name = "study"
    else:
        source = read_source(study)
        default_name = Path(study).stem
    problems = Problems(source)
    for where, line in source.duplicates:
        problems.add(where, f"duplicate key {where[-1]!r} (a later one would silently win)", line=line)
    data = source.data
    if not isinstance(data, dict):
        problems.add((), "a study is a mapping with the keys " + ", ".join(TOP_KEYS))
        problems.raise_if_any()
    for key in data:
        if key not in TOP_KEYS:
            problems.add((key,), f"unknown key {key!r}{suggest(str(key), TOP_KEYS)}; known: {', '.join(TOP_KEYS)}",
                         key=True)  # fmt: skip
    name = _top_text(data, "name", default_name, problems)
    device = _top_text(data, "device", "auto", problems)
    where_out = _top_text(data, "out", f"runs/{safe_id(name)}", problems)
    entries = data.get("jobs")
    if not isinstance(entries, list) or not entries:
        problems.add(("jobs",), "jobs must be a non-empty list of job entries (each with a method)")
        entries = []
    expanded = []
    for i, entry in enumerate(entries):
        for params, settings, parts, method in _expand(source, problems, i, entry):
            expanded.append((method, params, settings, parts, source.line(("jobs", i))))
    problems.raise_if_any()
    ids = unique_ids([safe_id("-".join(parts)) for *_, parts, _ in expanded])
    jobs = [
        Job(index, job_id, method, params, settings, line)
        for index, (job_id, (method, params, settings, _, line)) in enumerate(zip(ids, expanded, strict=True))
    ]
    folder = Path(out) if out is not None else (source.root / where_out).resolve()
    return Study(name, folder, device, jobs, source.name)


def _top_text(data: dict, key: str, default: str, problems: Problems) -> str:
    try:
        return text(data.get(key, default), Path())
    except ValueError as error:
        problems.add((key,), str(error))
        return default


def _expand(source: Source, problems: Problems, i: int, entry: Any) -> list[tuple[dict, dict, list[str], str]]:
    """The jobs of one entry as (params, settings, name parts, method); problems are added, not raised."""
    where = ("jobs", i)
    if not isinstance(entry, dict):
        problems.add(where, f"a job entry is a mapping with a method ({', '.join(METHODS)}), not {entry!r}")
        return []
    name = entry.get("method")
    if name not in METHODS:
        known = ", ".join(METHODS)
        if name is None:
            problems.add(where, f"missing key 'method' (one of {known})")
        else:
            problems.add((*where, "method"), f"unknown method {name!r}{suggest(str(name), METHODS)}; known: {known}")
        return []
    method = METHODS[name]
    known = [*ENTRY_KEYS, *method.fields]
    for key in entry:
        if key not in known:
            problems.add((*where, key), f"unknown key {key!r} for method {name}{suggest(str(key), known)}; "
                         f"known: {', '.join(known)}", key=True)  # fmt: skip
    before = len(problems.found)
    label = _label(entry, where, name, problems)
    axes, fixed = _values(source, problems, where, entry, method)
    settings = _settings(problems, where, entry.get("settings", {}), method, "settings", sweep=False)
    sweep = _settings(problems, where, entry.get("sweep", {}), method, "sweep", sweep=True)
    for key in set(settings) & set(sweep):
        problems.add((*where, "sweep", key), f"{key!r} is in both settings and sweep; keep it in one", key=True)
    complete = len(problems.found) == before  # else the entry's settings are still checked, but it makes no job
    jobs = []
    symbols = method.settings().symbols()  # a swept setting's part of the job name: w_g, K, T, ...
    grid = [values for _, values, _ in axes] + list(sweep.values())
    for combination in itertools.product(*grid):
        chosen, swept = combination[: len(axes)], dict(zip(sweep, combination[len(axes) :], strict=True))
        params = {**fixed, **{key: value for (key, _, _), value in zip(axes, chosen, strict=True)}}
        job_settings = {**settings, **swept}
        problem = _job_problem(method, params, job_settings, complete)
        if problem is not None:  # a bad combination is one more problem
            place = (*where, "sweep") if swept else (*where, "settings") if settings else where
            problems.add(place, problem)
        if problem is not None or not complete:
            continue
        parts = [label] + [
            _part(field.prefix if field.prefix is not None else key, field.short(value))
            for (key, _, listed), value in zip(axes, chosen, strict=True)
            if value is not None and ((field := method.fields[key]).prefix is not None or listed)
        ]
        parts += [_part(symbols.get(key, key), _value_text(value)) for key, value in swept.items()]
        jobs.append((params, job_settings, parts, name))
    return jobs


def _job_problem(method: Method, params: dict, settings: dict, complete: bool) -> str | None:
    """The first problem of one job: the method's check of its values (only when every key of its entry parsed),
    then its settings against the solver's config (skipped when the config needs a value that did not parse)."""
    try:
        if complete:
            method.check(params, settings)
        config = method.config(params)
    except FeatscopeError as error:
        return str(error) if complete else None  # an incomplete entry's problem is reported already
    try:
        check_settings(config, settings)
    except FeatscopeError as error:
        return str(error)
    return None


def _label(entry: dict, where: tuple, method: str, problems: Problems) -> str:
    try:
        return text(entry.get("name", method), Path())
    except ValueError as error:
        problems.add((*where, "name"), str(error))
        return method


def _values(source: Source, problems: Problems, where: tuple, entry: dict, method: Method):
    """The entry's grid axes [(key, values, given as a list)] and its fixed values {key: value}."""
    axes, fixed = [], {}
    for key, field in method.fields.items():
        raw = entry.get(key, field.default)
        if raw is REQUIRED:
            problems.add(where, f"missing key {key!r}: {field.doc}")
            continue
        if not field.axis:
            fixed[key] = _parse(field, raw, source, problems, (*where, key))
            continue
        listed = isinstance(raw, list)
        if listed and not raw:
            problems.add((*where, key), "empty list: the grid would have no jobs")
            continue
        values = raw if listed else [raw]
        places = [(*where, key, j) for j in range(len(values))] if listed else [(*where, key)]
        axes.append((key, [_parse(field, v, source, problems, p) for v, p in zip(values, places, strict=True)], listed))
    return axes, fixed


def _parse(field: Field, value: Any, source: Source, problems: Problems, where: tuple) -> Any:
    if value is None and field.default is None:
        return None
    try:
        return field.parse(value, source.root)
    except ValueError as error:
        problems.add(where, str(error))
        return None


def _settings(problems: Problems, where: tuple, raw: Any, method: Method, key: str, *, sweep: bool) -> dict:
    """``settings:`` (one value per setting) or ``sweep:`` (a non-empty list per setting), names checked."""
    if not isinstance(raw, dict):
        problems.add((*where, key), f"{key} must be a mapping of solver settings, not {raw!r}")
        return {}
    known = {f.name: f for f in fields(method.settings())}
    names = list(known)
    result = {}
    for name, value in raw.items():
        if name not in names:
            problems.add((*where, key, name), f"unknown setting {name!r}{suggest(str(name), names)}; "
                         f"known: {', '.join(names)}", key=True)  # fmt: skip
        elif sweep and (not isinstance(value, list) or not value):
            problems.add((*where, key, name), f"a sweep takes a non-empty list of values, not {value!r}")
        else:
            result[name] = [_spelled(known[name], v) for v in value] if sweep else _spelled(known[name], value)
    return result


def _spelled(f: Any, value: Any) -> Any:
    """A list setting's value as its dataclass holds it: its command-line text read (``"0,0.5"``), a list kept as
    a tuple; other values as they are (the settings check reports a wrong one)."""
    if str(f.type).startswith("tuple[") and isinstance(value, (str, list)):
        try:
            return plain_value(f, value)
        except ValueError:
            return value
    return value


def _part(prefix: str, value: str) -> str:
    if not prefix:
        return value
    return f"{prefix}{'' if value[:1].isdigit() or value[:1] == '-' else '_'}{value}"


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return format(value, "g") if isinstance(value, float) else str(value)
