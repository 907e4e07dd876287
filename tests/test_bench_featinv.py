"""FeatInv next to the universal decoder on world targets, through `featscope bench featinv`."""

from __future__ import annotations

import json

from featscope import featinv
from featscope.bench.featinv import run_featinv_bench
from featscope.cli import main


def test_featinv_and_universal_decoder_are_scored_on_the_same_targets(tmp_path):
    model = featinv.build("world:ddpm", "world:shape-net@block2", adapter_width=8)
    model.save(tmp_path / "model")
    report = run_featinv_bench(
        tmp_path / "bench", model=tmp_path / "model", n=2, preset="faster", featinv_steps=(4, 2), quiet=True
    )
    four, two, universal_row = report["rows"]
    assert (four["method"], two["method"]) == ("featinv (4 steps)", "featinv (2 steps)")
    assert universal_row["method"] == "universal (faster)" and "speedup" not in universal_row
    for row in report["rows"]:
        assert all(entry["total"] == 2 for entry in row["agreement"].values())
        assert -1 <= row["feature_cosine_mean"] <= 1 and row["seconds_per_image"] > 0
    assert two["network_evaluations_per_image"] < four["network_evaluations_per_image"] < 50
    assert four["network_evaluations_per_image"] < universal_row["network_evaluations_per_image"]
    assert four["speedup"] == universal_row["seconds_per_image"] / four["seconds_per_image"]
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["config"]["extractor"] == "world:shape-net@block2"
    assert saved["config"]["featinv_sampling"]["num_steps"] == [4, 2]
    assert "| featinv (2 steps) |" in (tmp_path / "bench" / "results.md").read_text()


def test_bad_step_counts_are_a_one_line_error(tmp_path, capsys):
    assert main(["bench", "featinv", "--featinv-steps", "10,x", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--featinv-steps" in err and not (tmp_path / "b").exists()
