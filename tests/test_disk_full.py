"""A disk that fills up mid-run: one error line, a non-zero exit, no half-written result, and a rerun resumes.

The disk is made full for real: the command runs in its own process, which lowers its file-size limit
(RLIMIT_FSIZE) once the run is under way. Every later write past the limit then fails with EFBIG, as
writes to a full disk fail with ENOSPC (Python ignores SIGXFSZ, so the write raises instead of killing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featscope.cli import main
from shared_inputs import DECODE_STUDY

TESTS = Path(__file__).parent
EXAMPLES = TESTS.parent / "examples"

# featscope ARGS, whose writes past LIMIT bytes in a file fail once a file matching TRIGGER (a glob) is non-empty
FILL_DISK_WHEN = """
import resource, sys, threading, time
from pathlib import Path
from featscope.cli import main

def fill(pattern: str, limit: int) -> None:
    while not any(p.stat().st_size > 0 for p in Path().glob(pattern) if p.is_file()):
        time.sleep(0.002)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

threading.Thread(target=fill, args=(sys.argv[1], int(sys.argv[2])), daemon=True).start()
sys.exit(main(sys.argv[3:]))
"""


def run_until_the_disk_is_full(trigger: str, args: list[str], cwd: Path, limit: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", FILL_DISK_WHEN, trigger, str(limit), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def assert_one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("featscope: error: cannot write ") and "File too large" in lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files and partial run folders: what an atomic writer must never leave behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.startswith("."))


def test_decode_on_a_full_disk_leaves_no_result_and_reruns(tmp_path, capsys):
    args = ["decode", "--target", str(EXAMPLES / "yellow-star.png"), "--preset", "faster", "--steps", "6",
            "--device", "cpu", "--quiet", "--out", "run"]  # fmt: skip
    result = run_until_the_disk_is_full(".run.partial/log.jsonl", args, tmp_path)  # fills after the first step
    line = assert_one_error_line(result)
    assert "log.jsonl" in line
    assert not (tmp_path / "run").exists() and leftovers(tmp_path) == []
    assert main(args[:-1] + [str(tmp_path / "run")]) == 0  # space freed: the same command now succeeds
    assert (tmp_path / "run" / "metrics.json").is_file() and leftovers(tmp_path) == []


def test_an_investigation_on_a_full_disk_keeps_finished_items_and_resumes(tmp_path, capsys):
    args = ["investigate", "neuron", "--net", "world:shape-net@fc", "--channels", "1,5,7", "--steps", "2",
            "--iterations", "1", "--cutouts", "1", "--device", "cpu", "--out", "inv"]  # fmt: skip
    result = run_until_the_disk_is_full(
        "inv/*/metrics.json", [*args, "--quiet"], tmp_path
    )  # fills once one item is done
    assert_one_error_line(result)
    out = tmp_path / "inv"
    done = sorted(p.name for p in out.iterdir())
    assert done == ["neuron1_s0"] and (out / "neuron1_s0" / "metrics.json").is_file(), done
    assert leftovers(tmp_path) == []
    capsys.readouterr()
    assert main(args[:-2] + ["--out", str(out)]) == 0  # without --quiet
    assert "neuron1_s0: already done, skipped" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["neuron1_s0", "neuron5_s0", "neuron7_s0", "summary.json",
                                                     "summary.md"]  # fmt: skip


STUDY = DECODE_STUDY.format(name="full")


def test_a_study_on_a_full_disk_stops_at_once_and_a_rerun_resumes(tmp_path, capsys):
    shutil.copy(EXAMPLES / "yellow-star.png", tmp_path)
    (tmp_path / "study.yaml").write_text(STUDY.lstrip())
    result = run_until_the_disk_is_full("out/*/metrics.json", ["batch", "study.yaml", "--quiet"], tmp_path)
    assert_one_error_line(result)  # not one failure per remaining job
    out = tmp_path / "out"
    done = [p.parent.name for p in out.glob("*/metrics.json")]
    assert len(done) == 1 and not list(out.glob("*/error.json"))
    assert [p for p in leftovers(tmp_path) if p != "out/.claims"] == [] and not list(out.glob(".claims/*"))
    capsys.readouterr()
    assert main(["batch", str(tmp_path / "study.yaml")]) == 0
    assert f"{done[0]}: already done, skipped" in capsys.readouterr().out
    assert len(list(out.glob("*/metrics.json"))) == 3 and leftovers(tmp_path) == []


def test_a_study_does_not_go_on_to_fail_every_job_on_a_full_disk(tmp_path):
    """Small files still fit, result images do not: the first job's failure stops the study (no error.json for
    each job, as an ordinary failure would leave)."""
    shutil.copy(EXAMPLES / "yellow-star.png", tmp_path)
    (tmp_path / "study.yaml").write_text(STUDY.lstrip())
    result = run_until_the_disk_is_full("study.yaml", ["batch", "study.yaml", "--quiet"], tmp_path, limit=10_000)
    assert "sheet.png" in assert_one_error_line(result)  # the largest file of a decode run
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["study.jsonl"]


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_an_image_tensor_with_nan_is_refused_in_one_line(tmp_path, capsys, suffix):
    """The command line reads images only from image files; a tensor file is a feature and is checked."""
    import torch

    image = np.full((1, 3, 32, 32), np.nan, np.float32)
    path = tmp_path / f"image{suffix}"
    np.save(path, image) if suffix == ".npy" else torch.save(torch.from_numpy(image), path)
    assert main(["decode", "--target", str(path), "--quiet", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN or infinite" in err[0] and not (tmp_path / "run").exists()
