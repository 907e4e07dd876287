"""decode reads its result for the user: the world oracle's kept and changed attributes, and sheet.png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import featscope
from featscope.cli import main

EXAMPLES = Path(__file__).parent.parent / "examples"
TINY = {"num_steps": 3, "recurrence": 1}


def test_a_world_target_gets_the_oracles_reading_in_metrics_the_sheet_and_the_console(tmp_path, capsys):
    code = main(["decode", "--target", str(EXAMPLES / "yellow-star.png"), "--out", str(tmp_path / "run"),
                 "--steps", "3", "-K", "1", "--quiet"])  # fmt: skip
    assert code == 0
    sample = json.loads((tmp_path / "run" / "metrics.json").read_text())["samples"][0]
    reading = sample["readings"]["world-oracle"]
    assert reading["target"] == {
        "shape": "star", "color": "yellow", "size": "large", "position": "middle-center", "background": "dark"
    }  # fmt: skip
    kept, changed = reading["kept"], reading["changed"]
    assert sorted(kept + list(changed)) == sorted(reading["target"]) or not reading["valid"]
    line = capsys.readouterr().out.splitlines()[1]
    assert line == f"yellow-star: {reading['summary']}" and line.startswith("yellow-star: ")
    sheet = np.asarray(Image.open(tmp_path / "run" / "sheet.png"))
    assert sheet.shape[0] > 128 + 2 * 14 and sheet.shape[1] > 3 * 128  # three upscaled columns and a note line


def test_a_feature_target_has_no_reading_and_a_sheet_without_notes(tmp_path):
    feature = featscope.decode(str(EXAMPLES / "blue-triangle.png"), num_steps=1, recurrence=1, quiet=True)
    assert "readings" in feature.metrics[0]
    target = torch.zeros(1, 128)
    result = featscope.decode(features=target, out=tmp_path / "run", quiet=True, **TINY)
    assert "readings" not in result.metrics[0]
    with_notes = np.asarray(Image.open(tmp_path / "run" / "sheet.png"))
    assert with_notes.shape[0] < 128 + 2 * 14 + 14  # no note line under the row
