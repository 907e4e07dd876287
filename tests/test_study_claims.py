"""Studies across processes: jobs are claimed as processes free up, and a dead process's job is taken again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

from featscope.claims import Claims
from processes import child_env, finish, reaped, wait_for

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"


def _events(log: Path) -> list[dict]:
    lines = log.read_text().splitlines() if log.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _study(folder: Path, out: str) -> Path:
    path = folder / f"{out}.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: claims
            out: {out}
            device: cpu
            jobs:
              - method: decode
                targets: [{EXAMPLES / "yellow-star.png"}, {EXAMPLES / "blue-triangle.png"}]
                seeds: [0, 1]
                preset: faster
                settings: {{num_steps: 25, recurrence: 1}}
            """
        )
    )
    return path


def _batch(study: Path, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "featscope.cli", "batch", str(study), "--quiet"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    return subprocess.Popen(command, cwd=study.parent, env=child_env(**env), **pipes)


def test_three_slurm_tasks_one_killed_mid_job_every_job_finishes_once_as_in_one_process(tmp_path):
    study, out = _study(tmp_path, "shared"), tmp_path / "shared"
    array = {"SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"}
    tasks = [_batch(study, **array, SLURM_ARRAY_TASK_ID=str(i)) for i in range(3)]
    victim = tasks[2]

    def victim_started() -> bool:
        return any(e["event"] == "start" and e["rank"] == 2 for e in _events(out / "study.jsonl"))

    with reaped(*tasks):  # a takeover that never happens fails in bounded time, leaving no task running
        wait_for(victim_started, victim, 240, "job started by the third task")
        victim.send_signal(signal.SIGKILL)  # dies holding its claim, mid-job
        finish(victim, 60)
        outputs = [finish(t, 240)[0].decode(errors="replace") for t in tasks[:2]]
    assert [t.returncode for t in tasks[:2]] == [0, 0], outputs

    events = _events(out / "study.jsonl")
    (killed,) = [e["job"] for e in events if e["event"] == "start" and e["rank"] == 2]
    assert not any(e["event"] == "done" and e["rank"] == 2 for e in events)  # killed before it finished
    done = [e["job"] for e in events if e["event"] == "done"]
    jobs = sorted(p.parent.name for p in out.glob("*/metrics.json"))
    assert len(jobs) == 4 and sorted(done) == jobs  # every job exactly once, the killed one by another task
    assert killed in done
    assert not list(out.glob(".*"))  # no claims or partial folders left
    assert json.loads((out / "summary.json").read_text())["done"] == 4

    alone = _batch(_study(tmp_path, "alone"))
    with reaped(alone):
        output = finish(alone, 240)[0].decode(errors="replace")
    assert alone.returncode == 0, output
    for job in jobs:
        shared = json.loads((out / job / "metrics.json").read_text())["samples"][0]
        single = json.loads((tmp_path / "alone" / job / "metrics.json").read_text())["samples"][0]
        assert shared["best_distance"] == single["best_distance"]
        for name in ("best.png", "final.png"):
            a, b = (np.asarray(Image.open(root / job / name)) for root in (out, tmp_path / "alone"))
            assert np.array_equal(a, b), (job, name)


def test_a_claim_is_held_once_and_a_dead_holders_claim_is_taken_over(tmp_path):
    first, second = Claims(tmp_path, "a"), Claims(tmp_path, "b")
    assert first.take("job") and not second.take("job")  # one holder
    first.release("job")
    assert second.take("job")
    second.release("job")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    claim = tmp_path / ".claims" / "job.claim"
    claim.write_text(json.dumps({"owner": "c", "host": first.host, "pid": int(dead.stdout), "time": 0}))
    assert second.is_stale("job") and second.take("job")  # its process is gone
    assert json.loads(claim.read_text())["owner"] == "b"
    old = Claims(tmp_path, "d", lease_seconds=0.05)
    claim.write_text(json.dumps({"owner": "e", "host": "another-host", "pid": 1, "time": 0}))
    time.sleep(0.1)
    assert old.take("job")  # its lease ran out
    old.release("job")
    old.tidy()
    assert not (tmp_path / ".claims").exists()
