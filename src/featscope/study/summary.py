"""The study's summary.json and summary.md: every job's status, headline numbers, time and error."""

from __future__ import annotations

import json
from pathlib import Path

from featscope._version import __version__
from featscope.runs import atomic_write_json, atomic_write_text
from featscope.study.log import LOG_NAME, job_times, read_log
from featscope.study.methods import METHODS
from featscope.study.plan import Study

ERROR_NAME = "error.json"


def job_status(folder: Path) -> str:
    """done (metrics.json), failed (error.json, no metrics.json) or missing."""
    if (folder / "metrics.json").is_file():
        return "done"
    return "failed" if (folder / ERROR_NAME).is_file() else "missing"


def write_summary(study: Study) -> dict:
    """Write ``summary.json`` and ``summary.md`` over all jobs of ``study`` (from their folders and the log)."""
    times = job_times(read_log(study.out / LOG_NAME))
    results = {}
    for job in study.jobs:
        folder = study.out / job.job_id
        status = job_status(folder)
        row = {
            "index": job.index,
            "method": job.method,
            "status": status,
            "seconds": times.get(job.job_id, {}).get("seconds"),
            "params": job.params,
            "settings": job.settings,
        }
        if status == "done":
            row["headline"] = METHODS[job.method].headline(json.loads((folder / "metrics.json").read_text()))
        elif status == "failed":
            row["error"] = json.loads((folder / ERROR_NAME).read_text())["error"]
        results[job.job_id] = row
    by_status = {s: [k for k, r in results.items() if r["status"] == s] for s in ("done", "failed", "missing")}
    summary = {
        "study": study.name,
        "source": study.source,
        "featscope": __version__,
        "jobs": len(study.jobs),
        "done": len(by_status["done"]),
        "failed": by_status["failed"],
        "missing": by_status["missing"],
        "results": results,
    }
    atomic_write_json(study.out / "summary.json", summary)
    atomic_write_text(study.out / "summary.md", _markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    results = summary["results"]
    columns = list(dict.fromkeys(c for r in results.values() for c in r.get("headline", {})))
    title = f"# study {summary['study']}: {summary['done']} of {summary['jobs']} jobs done"
    lines = [title + (f", {len(summary['failed'])} failed" if summary["failed"] else ""), ""]
    lines += ["| job | method | status | seconds | " + " | ".join(columns) + " |", "|---" * (len(columns) + 4) + "|"]
    for job_id, r in results.items():
        cells = [job_id, r["method"], r["status"], _cell(r["seconds"])]
        cells += [_cell(r.get("headline", {}).get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["failed"]:
        lines += ["", "## failed", ""] + [f"- `{k}`: {results[k]['error']}" for k in summary["failed"]]
    if summary["missing"]:
        lines += ["", f"missing (re-run to compute): {', '.join(summary['missing'])}"]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")
