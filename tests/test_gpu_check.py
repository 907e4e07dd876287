"""benchmarks/scripts/gpu_check.py --tiny: every row of the GPU check runs on CPU with tiny models and is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / "benchmarks" / "scripts"
NUMBERS = {
    "guided": ("seconds_per_iteration_median", "seconds_per_image_iteration", "peak_memory_mb"),
    "endtoend": ("seconds_iteration_0_and_1", "peak_memory_mb"),
    "featinv-train": ("seconds_per_step", "peak_memory_mb"),
    "featinv-reconstruct": ("seconds_per_image", "peak_memory_mb"),
    "per-image": ("seconds_per_image", "iterations"),
}


def run_check(out: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, str(SCRIPTS / "gpu_check.py"), "--tiny", "--iterations", "1", "--out", str(out)]
    done = subprocess.run([*command, *extra], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (records,) = out.glob("*.jsonl")
    return [json.loads(line) for line in records.read_text().splitlines()]


def test_tiny_check_records_every_row_with_a_number_or_a_reason(tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    from gpu_check import plan

    rows = run_check(tmp_path)
    assert [r["row"] for r in rows] == [row.key for row in plan()]
    for record in rows:
        assert record["device"].startswith("cpu") and record["scale"] == "tiny"
        if "skipped" in record:
            assert record["skipped"]
            continue
        for name in NUMBERS[record["kind"]]:
            assert isinstance(record[name], (int, float)) and record[name] > 0, (record["row"], name)
    skipped = {r["row"]: r["skipped"] for r in rows if "skipped" in r}
    assert skipped == {"guided/resnet50/bf16/b1/compile": skipped["guided/resnet50/bf16/b1/compile"]}
    kinds = {r["kind"] for r in rows}
    assert kinds == set(NUMBERS)
    by_row = {r["row"]: r for r in rows}
    reference = by_row["per-image/reference/fp32/b1"]
    assert "extrapolated" in reference and reference["iterations"] == 12960
    assert "extrapolated" not in by_row["per-image/fast/fp32/b1"]  # 100 tiny iterations fit: decoded in full
    assert {r["batch"] for r in rows if r["kind"] == "guided"} == {1, 4}
    assert {r["dtype"] for r in rows if r["kind"] == "guided"} == {"fp32", "bf16", "fp16"}


def test_rows_past_the_budget_are_marked_skipped(tmp_path):
    rows = run_check(tmp_path, "--budget", "0")
    assert rows and all(r["skipped"].startswith("budget:") for r in rows)
