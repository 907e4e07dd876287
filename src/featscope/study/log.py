"""study.jsonl: one JSON line per event (job start, done, fail, skip) from every rank, appended."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

LOG_NAME = "study.jsonl"


class StudyLog:
    """Appends events to ``out/study.jsonl``; each line is one ``write`` to a file opened with O_APPEND,
    so the lines of several ranks on one machine never interleave."""

    def __init__(self, out: Path, rank: int) -> None:
        self.path = out / LOG_NAME
        self.rank = rank

    def event(self, event: str, **fields) -> None:
        record = {"event": event, "rank": self.rank, "time": round(time.time(), 3), **fields}
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)
        except OSError as error:  # a full disk: say which file
            error.filename = error.filename or str(self.path)
            raise
        finally:
            os.close(fd)


def read_log(path: Path) -> list[dict]:
    """The events of a study log (a line cut short by a killed process is skipped)."""
    if not path.is_file():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def job_times(events: list[dict]) -> dict[str, dict]:
    """Per job, its latest outcome: status (done, failed, running), rank, start time and seconds."""
    jobs: dict[str, dict] = {}
    for e in events:
        if "job" not in e:
            continue
        if e["event"] == "start":
            jobs[e["job"]] = {"status": "running", "rank": e["rank"], "start": e["time"]}
        elif e["event"] in ("done", "fail"):
            entry = jobs.setdefault(e["job"], {"rank": e["rank"], "start": e["time"]})
            entry.update(status="done" if e["event"] == "done" else "failed", seconds=e.get("wall_seconds"))
    return jobs
