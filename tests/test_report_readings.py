"""featscope report shows what the readers (the world oracle) saw kept and changed in a decode run."""

from __future__ import annotations

import json

from featscope.report import write_report
from featscope.report.html import readings


def test_each_samples_reading_is_a_line_in_the_report(tmp_path):
    summary = "kept: shape | changed: color yellow->magenta"
    metrics = {
        "samples": [
            {"name": "star", "readings": {"world-oracle": {"summary": summary}}},
            {"name": "feature"},  # a feature target: nothing to read
        ],
        "summary": {"mean_best_distance": 1.0},
    }
    assert readings(metrics) == [f"star: {summary}"] and readings(None) == []
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "config.yaml").write_text("method: decode\n")
    write_report(run, tmp_path / "report.html")
    assert "star: kept: shape | changed: color yellow-&gt;magenta" in (tmp_path / "report.html").read_text()
