"""A run folder has one writer at a time, appears only with its metrics, and a place that cannot be written is
one error line: two real processes on one --out, a writer killed mid-run, failing writes."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import featscope
from featscope.cli import main
from featscope.errors import FeatscopeError, OutputError, RunBusyError
from featscope.orchestration import Item, run_items, write_run
from featscope.ranks import Ranks
from featscope.runs import RunFolder
from processes import child_env, featscope_child, finish, reaped, wait_for

EXAMPLES = Path(__file__).parent.parent / "examples"
DECODE = ["decode", "--target", str(EXAMPLES / "yellow-star.png"), "--steps", "2", "-K", "1", "--device", "cpu",
          "--quiet"]  # fmt: skip
RUN_FILES = {"config.yaml", "log.jsonl", "metrics.json", "final.png", "best.png", "target.png", "sheet.png"}

# a writer that holds run folder ARGV[1] until the file ARGV[2] appears (at most 120 s), then commits it
HOLDER = """
import sys, time
from pathlib import Path
from featscope.orchestration import write_run
from featscope.runs import RunFolder

out, go = Path(sys.argv[1]), Path(sys.argv[2])

def work(run):
    run.log({"step": 0})
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"writer": "holder"}

write_run(RunFolder(out), {"writer": "holder"}, work)
"""


def hidden(folder: Path) -> list[str]:
    """Claims, partial folders and temporary files: what a finished or refused run must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featscope: error: "), stderr[-3000:]
    return lines[0]


def start_holder(tmp_path: Path, out: Path) -> subprocess.Popen:
    """A process writing ``out``, once its first log line is written (it holds the folder's claim)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(tmp_path / "go")], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    log = out.parent / f".{out.name}.partial" / "log.jsonl"
    wait_for(lambda: log.is_file() and log.stat().st_size > 0, holder, 120, "first log line of the holder")
    return holder


def test_two_runs_on_one_out_at_once_one_writes_the_whole_folder_the_other_exits_2(tmp_path):
    runs = [featscope_child(*DECODE, "--out", "same", cwd=tmp_path) for _ in range(2)]
    with reaped(*runs):
        results = [(run, *finish(run, 300)) for run in runs]
    codes = sorted(run.returncode for run, _, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, _, err in results]
    (refused,) = [err for run, _, err in results if run.returncode == 2]
    line = one_error_line(refused)  # still writing, or finished by then: either way nothing is replaced
    assert "is being written by another run (pid " in line or "already holds files" in line, line
    assert {p.name for p in (tmp_path / "same").iterdir()} == RUN_FILES
    assert yaml.safe_load((tmp_path / "same" / "config.yaml").read_text())["method"] == "decode"
    assert hidden(tmp_path) == []


def test_a_folder_being_written_is_refused_naming_its_writer_and_the_writer_loses_nothing(tmp_path, capsys):
    out = tmp_path / "same"
    holder = start_holder(tmp_path, out)
    with reaped(holder):
        assert main([*DECODE, "--out", str(out)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"is being written by another run (pid {holder.pid} on {socket.gethostname()})" in line
        with pytest.raises(RunBusyError, match=f"pid {holder.pid}"):
            featscope.decode(EXAMPLES / "yellow-star.png", out=out, overwrite=True, num_steps=2, recurrence=1,
                             device="cpu", quiet=True)  # fmt: skip
        (tmp_path / "go").touch()
        finish(holder, 120)
    assert holder.returncode == 0
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"writer": "holder"}
    assert json.loads((out / "metrics.json").read_text()) == {"writer": "holder"}
    assert [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()] == [{"step": 0}]
    assert hidden(tmp_path) == []  # the holder's claim and partial folder are gone


def test_the_claim_of_a_killed_writer_is_taken_over(tmp_path, capsys):
    out = tmp_path / "same"
    holder = start_holder(tmp_path, out)
    with reaped(holder):
        holder.send_signal(signal.SIGKILL)  # dies holding the claim, mid-run
        finish(holder, 60)
    assert (tmp_path / ".same.claim").is_file() and (tmp_path / ".same.partial").is_dir()
    assert main([*DECODE, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == RUN_FILES and hidden(tmp_path) == []


def test_a_run_folder_appears_only_after_its_metrics_are_written(tmp_path):
    def work(run: RunFolder) -> dict:
        run.log({"step": 0})
        return {"value": 1.0}

    folder, metrics = write_run(RunFolder(tmp_path / "good"), {"a": 1}, work)
    assert {p.name for p in folder.iterdir()} == {"config.yaml", "log.jsonl", "metrics.json"}
    assert json.loads((folder / "metrics.json").read_text()) == metrics and hidden(tmp_path) == []

    def unwritable_metrics(run: RunFolder) -> dict:
        run.log({"step": 0})
        return {"value": object()}  # not JSON: writing metrics.json fails after the work succeeded

    with pytest.raises(TypeError):
        write_run(RunFolder(tmp_path / "bad"), {"a": 1}, unwritable_metrics)
    assert not (tmp_path / "bad").exists() and hidden(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nothing can be created")
def test_an_output_that_cannot_be_created_is_one_line_from_the_cli_and_an_output_error_from_the_api(capsys):
    assert main([*DECODE, "--out", "/proc/featscope-run"]) == 2
    line = one_error_line(capsys.readouterr().err)  # names the folder given, not its claim or partial folder
    assert line.startswith("featscope: error: cannot write /proc/featscope-run (No such file or directory)")
    assert main(["encode", str(EXAMPLES / "yellow-star.png"), "--out", "/proc/featscope.pt"]) == 2
    line = one_error_line(capsys.readouterr().err)  # not the temporary file it writes first
    assert line.startswith("featscope: error: cannot write /proc/featscope.pt (No such file or directory)")
    assert main(["world", "train", "shape-net", "--steps", "1", "--out", "/proc/featscope-train", "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)  # before any training step
    assert line.startswith("featscope: error: cannot write /proc/featscope-train (No such file or directory)")
    with pytest.raises(OutputError, match="cannot write /proc/") as raised:
        featscope.decode(EXAMPLES / "yellow-star.png", out="/proc/featscope-run", num_steps=2, recurrence=1,
                         device="cpu", quiet=True)  # fmt: skip
    assert isinstance(raised.value, FeatscopeError) and isinstance(raised.value, OSError)
    with pytest.raises(OutputError, match="cannot write /proc/featscope-items"):
        run_items("/proc/featscope-items", "test", [Item("a", None)], lambda run, item: {}, {}, ranks=Ranks(),
                  headline=dict)  # fmt: skip
