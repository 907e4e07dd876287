"""FeatInv next to the universal decoder on world targets, through `featscope bench --method featinv`."""

from __future__ import annotations

import json

from featscope import featinv
from featscope.bench.featinv import run_featinv_bench


def test_featinv_and_universal_decoder_are_scored_on_the_same_targets(tmp_path):
    model = featinv.build("world:ddpm", "world:shape-net@block2", adapter_width=8)
    model.save(tmp_path / "model")
    report = run_featinv_bench(tmp_path / "bench", model=tmp_path / "model", n=2, preset="faster", quiet=True)
    featinv_row, universal_row = report["rows"]
    assert featinv_row["method"] == "featinv" and universal_row["method"] == "universal (faster)"
    for row in report["rows"]:
        assert all(entry["total"] == 2 for entry in row["agreement"].values())
        assert -1 <= row["feature_cosine_mean"] <= 1 and row["seconds_per_image"] > 0
    assert featinv_row["network_evaluations_per_image"] < universal_row["network_evaluations_per_image"]
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["config"]["extractor"] == "world:shape-net@block2"
    assert "| featinv |" in (tmp_path / "bench" / "results.md").read_text()
