"""Kill and resume: a batch killed with SIGKILL after some items, then re-run, leaves exactly the files of a run
that was never interrupted (a study of decode jobs, and an investigation over several items)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from featscope.cli import main
from shared_inputs import DECODE_STUDY

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
TIMING = {"wall_seconds", "seconds", "peak_memory_mb", "time", "elapsed"}  # the only fields allowed to differ

STUDY = DECODE_STUDY.format(name="resume")
NEURON = ["investigate", "neuron", "--net", "world:shape-net@fc", "--channels", "1,5,7", "--steps", "2",
          "--iterations", "1", "--cutouts", "1", "--device", "cpu"]  # fmt: skip


def _untimed(value):
    """A JSON value without its timing fields (wall-clock time and memory differ between two identical runs)."""
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _untimed_table(text: str) -> list[list[str]]:
    """A Markdown summary's lines, split into cells, without the cells of a timing column."""
    rows = [line.split(" | ") for line in text.splitlines()]
    header = next((row for row in rows if row[0].startswith("| ")), [])
    drop = {i for i, cell in enumerate(header) if cell in TIMING}
    return [[cell for i, cell in enumerate(row) if i not in drop or len(row) != len(header)] for row in rows]


def _content(path: Path):
    if path.suffix == ".md":
        return _untimed_table(path.read_text())
    if path.suffix == ".json":
        return _untimed(json.loads(path.read_text()))
    if path.suffix == ".jsonl":
        return [_untimed(json.loads(line)) for line in path.read_text().splitlines()]
    return path.read_bytes()


def assert_same_run(resumed: Path, uninterrupted: Path, skip: tuple[str, ...] = ()) -> None:
    """Same files, byte for byte (JSON: equal once the timing fields are dropped); no partial folder left over."""

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in skip)

    assert files(resumed) == files(uninterrupted)
    assert not [p for p in resumed.rglob(".*")], "a temporary file or partial folder was left"
    for name in files(uninterrupted):
        assert _content(resumed / name) == _content(uninterrupted / name), name


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip


def kill_after_first_item(args: list[str], cwd: Path, out: Path) -> set[str]:
    """Run ``featscope ARGS`` in a process, SIGKILL it once one item's metrics.json exists; the items done then."""
    process = subprocess.Popen([sys.executable, "-m", "featscope.cli", *args], cwd=cwd, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 300
    try:
        while not list(out.glob("*/metrics.json")) and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        stderr = process.communicate(timeout=60)[1].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, stderr[-3000:]  # killed, not finished or crashed
    return {p.parent.name for p in out.glob("*/metrics.json")}


@pytest.fixture
def folder(tmp_path) -> Path:
    shutil.copy(EXAMPLES / "yellow-star.png", tmp_path)
    (tmp_path / "study.yaml").write_text(textwrap.dedent(STUDY).lstrip())
    return tmp_path


def test_a_killed_study_of_decode_jobs_resumes_to_the_uninterrupted_result(folder, capsys):
    reference = folder / "reference"
    assert main(["batch", str(folder / "study.yaml"), "--out", str(reference), "--quiet"]) == 0
    out = folder / "out"
    done = kill_after_first_item(["batch", "study.yaml", "--quiet"], folder, out)
    assert 1 <= len(done) < 3
    capsys.readouterr()
    assert main(["batch", str(folder / "study.yaml")]) == 0
    said = capsys.readouterr().out
    assert all(f"{job}: already done, skipped" in said for job in done)
    assert_same_run(out, reference, skip=("study.jsonl",))  # the study's own log records both runs


def test_a_killed_investigation_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert main([*NEURON, "--quiet", "--out", str(reference)]) == 0
    done = kill_after_first_item([*NEURON, "--quiet", "--out", str(out)], tmp_path, out)
    assert 1 <= len(done) < 3
    capsys.readouterr()
    assert main([*NEURON, "--out", str(out)]) == 0  # without --quiet: it says what it skipped
    said = capsys.readouterr().out
    assert all(f"{item}: already done, skipped" in said for item in done), (said, done)
    assert_same_run(out, reference)
