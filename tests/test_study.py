"""featscope batch: the study file's grid and checks, one-process runs, two ranks killed and resumed."""

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
from featscope.ranks import Ranks
from featscope.study import StudyError, load_study, run_study

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"
TINY_DECODE = {"num_steps": 3, "recurrence": 1}
TINY_E2E = {"num_steps": 2, "iterations": 1, "cutouts": 1}


@pytest.fixture
def folder(tmp_path) -> Path:
    """The two example targets and a corrupt PNG beside the study files."""
    for png in EXAMPLES.glob("*.png"):
        shutil.copy(png, tmp_path / png.name)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return tmp_path


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_grid_expands_in_a_fixed_order_into_readable_unique_names(folder, monkeypatch):
    study = {
        "name": "grid",
        "out": str(folder / "out"),
        "jobs": [
            {
                "method": "decode",
                "extractor": ["world:shape-net", "world:color-net@fc"],
                "targets": ["yellow-star.png", "blue-triangle.png"],
                "seeds": [0, 1],
                "preset": "faster",
                "settings": TINY_DECODE,
                "sweep": {"guidance_weight": [0.3, 1.5]},
            },
            {"method": "decode", "targets": "yellow-star.png", "seeds": 0, "extractor": "world:shape-net",
             "preset": "faster", "sweep": {"guidance_weight": [0.3]}},  # the same job again: a unique name
            {"method": "neuron", "net": "world:shape-net@fc", "channels": [1, 2], "settings": TINY_E2E},
        ],
    }  # fmt: skip
    monkeypatch.chdir(folder)  # a dict study's relative paths start in the working directory
    jobs = load_study(study).jobs
    ids = [job.job_id for job in jobs]
    assert len(jobs) == 2 * 2 * 2 * 2 + 1 + 2 and len(set(ids)) == len(ids)
    assert ids[:3] == [
        "decode-shape-net-seed0-target_yellow-star-w_g0.3",
        "decode-shape-net-seed0-target_yellow-star-w_g1.5",
        "decode-shape-net-seed0-target_blue-triangle-w_g0.3",
    ]
    assert ids[8] == "decode-color-net_fc-seed0-target_yellow-star-w_g0.3"
    assert ids[16] == "decode-shape-net-seed0-target_yellow-star-w_g0.3-2"
    assert ids[17:] == ["neuron-shape-net_fc-ch1-seed0", "neuron-shape-net_fc-ch2-seed0"]
    assert jobs[1].settings == {**TINY_DECODE, "guidance_weight": 1.5} and jobs[1].params["seeds"] == 0
    assert jobs[1].params["targets"] == str(folder / "yellow-star.png")
    shards = [[job.index for job in jobs if Ranks(rank, 3).mine(job.index)] for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(len(jobs))) and shards[1][:2] == [1, 4]


BAD_STUDY = """
name: bad
outt: out
jobs:
  - method: decode
    extractor: [world:shape-net, torchvisoin:resnet50]
    backbone: sdxxl:foo
    targets: [yellow-star.png, nowhere.png]
    seeds: ["one", 1]
    preset: fastest
    settings: {num_stepz: 3}
    sweep:
      guidance_weight: []
  - method: decode
    targets: []
    seeds: 0
    seeds: 1
  - method: decodr
  - method: neuron
    net: world:shape-net
    channels: 1
    settings: {iterations: -1}
  - method: decode
    targets: yellow-star.png
    extractor: world:shape-nett
    sweep:
      num_steps: [2, 0]
"""
EXPECTED = [  # (line, fragment): every problem of BAD_STUDY
    (2, "unknown key 'outt'; did you mean out?"),
    (5, "jobs[0].extractor[1]: unknown extractor family 'torchvisoin'"),
    (6, "jobs[0].backbone: unknown backbone family in 'sdxxl:foo'"),
    (7, "jobs[0].targets[1]: file 'nowhere.png' does not exist"),
    (8, "jobs[0].seeds[0]: expected an integer, not 'one'"),
    (9, "jobs[0].preset: expected one of reference, fast, faster, refine, not 'fastest'"),
    (10, "jobs[0].settings.num_stepz: unknown setting 'num_stepz'; did you mean num_steps"),
    (12, "jobs[0].sweep.guidance_weight: a sweep takes a non-empty list"),
    (14, "jobs[1].targets: empty list: the grid would have no jobs"),
    (16, "jobs[1].seeds: duplicate key 'seeds'"),
    (17, "jobs[2].method: unknown method 'decodr'; did you mean decode?"),
    (21, "jobs[3].settings: iterations must be >= 0"),
    (24, "jobs[4].extractor: unknown world network 'world:shape-nett'"),
    (26, "jobs[4].sweep: num_steps must be at least 1"),  # a bad spec does not hide the entry's other problems
]


def test_every_problem_is_listed_with_its_line_and_nothing_runs(folder, capsys):
    path = _write(folder / "bad.yaml", BAD_STUDY)
    with pytest.raises(StudyError) as caught:
        load_study(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: {len(EXPECTED)} problems, nothing was run:"
    for (line, fragment), text in zip(EXPECTED, lines[1:], strict=True):
        assert text.strip().startswith(f"{path}:{line}: ") and fragment in text, (line, fragment, text)

    assert main(["batch", str(path)]) == 2  # the command line: exit 2, every problem in the message
    err = capsys.readouterr().err
    assert err.startswith("featscope: error: ") and all(fragment in err for _, fragment in EXPECTED)
    assert sorted(p.name for p in folder.iterdir()) == ["bad.yaml", "blue-triangle.png", "corrupt.png",
                                                        "yellow-star.png"]  # fmt: skip

    _write(folder / "syntax.yaml", "jobs:\n  - method: decode\n    targets: [a.png\n")
    with pytest.raises(StudyError, match=r"syntax.yaml:4: not valid YAML"):
        load_study(folder / "syntax.yaml")


SEVERAL_BAD_JOBS = """
jobs:
  - method: neuron
    net: world:shape-nett
    channels: [1, -2]
    settings: {iterations: -1}
  - method: counterfactual
    net: torchvisoin:resnet50
    images: missing.png
    start: circle
    target_classes: square
    sweep: {num_steps: [0, 2]}
  - method: difference
    net1: world:shape-net
    net2: world:spurious-nett
    classes: circle
    settings: {guidance_scale: high, cutouts: 1}
  - method: decode
    backbone: sdxxl:foo
    targets: yellow-star.png
    preset: fast
    settings: {recurrence: 0.5}
"""


def test_every_problem_of_every_bad_job_is_listed(folder):
    """Each job has a bad network or backbone and other problems: the one error lists all of them."""
    path = _write(folder / "several.yaml", SEVERAL_BAD_JOBS)
    with pytest.raises(StudyError) as caught:
        load_study(path)
    expected = [
        (3, "jobs[0].net: unknown world network 'world:shape-nett'"),
        (4, "jobs[0].channels[1]: must be at least 0, not -2"),
        (5, "jobs[0].settings: iterations must be >= 0"),
        (7, "jobs[1].net: unknown extractor family 'torchvisoin'"),
        (8, "jobs[1].images: file 'missing.png' does not exist"),
        (11, "jobs[1].sweep: num_steps must be at least 1"),
        (14, "jobs[2].net2: unknown world network 'world:spurious-nett'"),
        (16, "jobs[2].settings: setting guidance_scale must be float, not 'high'"),
        (18, "jobs[3].backbone: unknown backbone family in 'sdxxl:foo'"),
        (21, "jobs[3].settings: setting recurrence must be int, not 0.5"),
    ]
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: {len(expected)} problems, nothing was run:"
    for (line, fragment), text in zip(expected, lines[1:], strict=True):
        assert text.strip().startswith(f"{path}:{line}: {fragment}"), (line, fragment, text)


def test_one_process_runs_decode_and_investigations_records_failures_and_logs(folder):
    study = _write(
        folder / "mixed.yaml",
        f"""
        name: mixed
        out: out
        device: cpu
        jobs:
          - method: decode
            targets: yellow-star.png
            preset: faster
            save_every: 1
            settings: {json.dumps(TINY_DECODE)}
          - method: decode
            name: broken
            targets: corrupt.png
            settings: {json.dumps(TINY_DECODE)}
          - method: difference
            net1: world:shape-net@fc
            net2: world:spurious-net@fc
            classes: circle
            settings: {json.dumps(TINY_E2E)}
          - method: neuron
            net: world:shape-net@fc
            channels: 1
            settings: {json.dumps(TINY_E2E)}
        """,
    )
    result = run_study(study, quiet=True)
    out = folder / "out"
    decode_id, broken_id, difference_id, neuron_id = (job.job_id for job in result.study.jobs)
    assert {"final.png", "best.png", "target.png", "metrics.json", "config.yaml", "log.jsonl", "steps"} <= {
        p.name for p in (out / decode_id).iterdir()
    }
    for job_id in (difference_id, neuron_id):  # an investigation's item folder is the job folder
        assert {"initial.png", "best.png", "metrics.json", "config.yaml"} <= {p.name for p in (out / job_id).iterdir()}
    error = json.loads((out / broken_id / "error.json").read_text())
    assert "cannot read image" in error["error"] and "Traceback" in error["traceback"]
    assert result.failed == [broken_id]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 3 and summary["failed"] == [broken_id] and summary["missing"] == []
    assert "cannot read image" in summary["results"][broken_id]["error"]
    assert summary["results"][difference_id]["headline"]["class"] == "circle"
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("# study mixed: 3 of 4 jobs done, 1 failed") and "## failed" in markdown
    events = _log_events(out / "study.jsonl")
    assert [(e["event"], e.get("job")) for e in events if "job" in e] == [
        ("start", decode_id), ("done", decode_id), ("start", broken_id), ("fail", broken_id),
        ("start", difference_id), ("done", difference_id), ("start", neuron_id), ("done", neuron_id),
    ]  # fmt: skip
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no work or partial folders left
    assert 'class="sortable metrics"' in result._repr_html_()


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def _log_events(log: Path) -> list[dict]:
    """The complete JSON lines of a study log (a killed rank may leave its last line half-written)."""
    lines = log.read_text().splitlines() if log.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _kill_leftover_ranks(log: Path) -> None:
    """SIGKILL any rank of this test's batch still alive (by the pids its study log recorded)."""
    for event in _log_events(log):
        pid = event.get("pid")
        cmdline = Path(f"/proc/{pid}/cmdline")
        if pid and cmdline.is_file() and b"featscope.cli" in cmdline.read_bytes():
            os.kill(pid, signal.SIGKILL)


def _ranks_started(out: Path) -> bool:
    """Both ranks have logged the start of a job (one may finish a job before the other starts one)."""
    return {e["rank"] for e in _log_events(out / "study.jsonl") if e["event"] == "start"} == {0, 1}


def test_two_ranks_killed_after_the_first_job_then_resumed(folder):
    """torchrun with 2 gloo ranks, killed once a job is done; the re-run skips done jobs and finishes the rest."""
    study = _write(
        folder / "study.yaml",
        """
        name: resume
        out: out
        device: cpu
        jobs:
          - method: decode
            targets: [yellow-star.png, blue-triangle.png]
            seeds: [0, 1, 2]
            preset: faster
            settings: {num_steps: 12, recurrence: 1}
          - method: decode
            name: broken
            targets: corrupt.png
        """,
    )
    out = folder / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    first = subprocess.Popen(
        [*launcher, "-m", "featscope.cli", "batch", str(study), "--quiet"],
        cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.time() + 240
    while not (list(out.glob("*/metrics.json")) and _ranks_started(out)) and first.poll() is None:
        if time.time() > deadline:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)  # torchrun passes it on to its workers, which die mid-job
    try:
        output = first.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        _kill_leftover_ranks(out / "study.jsonl")
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    assert 1 <= len(done) < 6, output[-3000:]

    jobs = load_study(study).jobs
    good = [job.job_id for job in jobs if job.job_id.startswith("decode-")]
    broken = jobs[-1].job_id
    pending = next(job_id for job_id in good if job_id not in done)
    fake = out / f".{pending}.partial"  # as if killed just before the rename: must not count as done
    fake.mkdir(exist_ok=True)
    (fake / "metrics.json").write_text("{}")

    again = subprocess.run(
        [sys.executable, "-m", "featscope.cli", "batch", str(study)],
        cwd=folder, env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert again.returncode == 1, again.stderr[-3000:]  # a job failed: exit 1, after every other job ran
    assert f"1 job(s) failed: {broken}" in again.stderr
    for job_id, mtime in done.items():
        assert f"{job_id}: already done, skipped" in again.stdout
        assert (out / job_id / "metrics.json").stat().st_mtime_ns == mtime  # not recomputed
    assert all((out / job_id / "metrics.json").is_file() for job_id in good)
    assert json.loads((out / pending / "metrics.json").read_text())["summary"]["samples"] == 1
    assert not list(out.glob(".*"))  # no partial folders left
    assert "cannot read image" in json.loads((out / broken / "error.json").read_text())["error"]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["missing"]) == (6, [broken], [])

    events = _log_events(out / "study.jsonl")
    second = next(i for i, e in enumerate(events) if e["event"] == "study_start" and e["world"] == 1)
    starts = [e for e in events[:second] if e["event"] == "start"]
    assert {e["rank"] for e in starts} == {0, 1} and all(e["index"] % 2 == e["rank"] for e in starts)
    assert {e["job"] for e in events[second:] if e["event"] == "skip"} == set(done)
