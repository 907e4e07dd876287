"""Finding runs to report: one run folder, a folder of runs (study or investigate output), or a study file.

Every method writes the one run-folder layout: ``target.png`` (the real image aimed at), ``initial.png``
(iteration 0), ``best.png`` (the best iterate), ``final.png`` (the last one), ``_<i>`` suffixes for batches,
then any other PNGs (``strip.png``, ``loss.png``, ``sheet.png``, ...), ``metrics.json``, ``config.yaml``,
``log.jsonl`` and ``steps/step<step>_<sample>.png``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from featscope.errors import InputFileError

MARKERS = ("metrics.json", "config.yaml", "error.json")
IMAGE_ORDER = ("target", "mask", "initial", "best", "final")  # shown first, in this order
RESULT_IMAGES = ("best", "final")  # a run's thumbnail: its best image, else its final one
STEP_NAME = re.compile(r"step(\d+)_(\d+)\.png$")


@dataclass
class Run:
    """One run folder as read from disk; ``status`` is done, failed, running or missing."""

    name: str
    path: Path
    status: str
    method: str | None = None
    config: dict | None = None
    metrics: dict | None = None
    error: str | None = None
    log: list[dict] = field(default_factory=list)
    rank: int | None = None
    seconds: float | None = None

    def images(self) -> list[Path]:
        """Top-level PNGs: targets, masks, initial, best and final images first, then the rest by name."""
        if not self.path.is_dir():
            return []

        def order(p: Path) -> tuple:
            kind = p.stem.split("_")[0]
            return (IMAGE_ORDER.index(kind) if kind in IMAGE_ORDER else len(IMAGE_ORDER), p.name)

        return sorted((p for p in self.path.glob("*.png")), key=order)

    def result_image(self) -> Path | None:
        """The image that stands for the run: its (first) best image, else its final one; None if neither."""
        images = self.images()
        for kind in RESULT_IMAGES:
            for path in images:
                if path.stem.split("_")[0] == kind:
                    return path
        return None

    def steps(self, limit: int = 8) -> dict[int, list[tuple[int, Path]]]:
        """Per sample, at most ``limit`` evenly spaced intermediates from ``steps/`` as (step, file)."""
        found: dict[int, list[tuple[int, Path]]] = {}
        for p in sorted((self.path / "steps").glob("step*_*.png")):
            match = STEP_NAME.search(p.name)
            if match:
                found.setdefault(int(match.group(2)), []).append((int(match.group(1)), p))
        picked = {}
        for sample, frames in sorted(found.items()):
            frames.sort()
            if len(frames) > limit:
                frames = [frames[round(i * (len(frames) - 1) / (limit - 1))] for i in range(limit)]
            picked[sample] = frames
        return picked

    def _repr_html_(self) -> str:
        from featscope.report.html import STYLE, run_section

        return f'<div class="fs"><style>{STYLE}</style>{run_section(self)}</div>'


@dataclass
class RunSet:
    """What a report shows: a title, the folder it is written beside, the runs, and the study's log events."""

    title: str
    root: Path
    runs: list[Run]
    events: list[dict] = field(default_factory=list)


def collect(source: str | Path) -> RunSet:
    """The runs of a study file (its output folder), of a folder of run folders, or one run folder."""
    from featscope.study.log import LOG_NAME, job_times, read_log

    source = Path(source)
    if source.is_file() and source.suffix in (".yaml", ".yml"):
        from featscope.study import load_study

        study = load_study(source)
        title, root, names = f"study {study.name}", study.out, [job.job_id for job in study.jobs]
    elif _is_run(source):
        title, root, names = source.name, source, None
    elif source.is_dir():
        title, root = source.name, source
        found = [p.name for p in sorted(source.iterdir()) if not p.name.startswith(".") and _is_run(p)]
        results = (_json(source / "summary.json") or {}).get("results", {})  # a study's or an investigation's
        order = sorted(results, key=lambda name: results[name].get("index", 0))  # a study's job order
        names = [n for n in order if n in found] + [n for n in found if n not in order]
        if not names:
            raise InputFileError(f"no run folders in {str(source)!r} (a run folder holds {', '.join(MARKERS)})")
    else:
        raise InputFileError(f"{str(source)!r} is neither a run folder, a folder of runs nor a study .yaml file")
    events = read_log(root / LOG_NAME)
    times = job_times(events)
    runs = [read_run(root, None)] if names is None else [read_run(root / name, times.get(name)) for name in names]
    return RunSet(title, root, runs, events)


def _is_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / m).is_file() for m in MARKERS)


def read_run(folder: Path, times: dict | None) -> Run:
    """A run's config, metrics, error and step log; ``times``: its rank and seconds from a study log."""
    config = _yaml(folder / "config.yaml")
    metrics = _json(folder / "metrics.json")
    error = _json(folder / "error.json")
    times = times or {}
    if metrics is not None:
        status = "done"
    elif error is not None:
        status = "failed"
    else:
        status = "running" if times.get("status") == "running" else "missing"
    method = (config or {}).get("method") or (error or {}).get("method")
    log = []
    if (folder / "log.jsonl").is_file():
        for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                log.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    message = error.get("error") if error else None
    rank, seconds = times.get("rank"), times.get("seconds")
    return Run(folder.name, folder, status, method, config, metrics, message, log, rank, seconds)


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _yaml(path: Path) -> dict | None:
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
