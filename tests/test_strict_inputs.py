"""Non-finite settings are refused in one line; every JSON file featscope writes is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from featscope.cli import main
from featscope.errors import FeatscopeError
from featscope.runs import RunFolder, atomic_write_json
from featscope.solvers.configs import EndToEndConfig, UniversalConfig

EXAMPLES = Path(__file__).parent.parent / "examples"


def _strict(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_non_finite_setting_is_refused_with_its_flag(value):
    with pytest.raises(FeatscopeError, match=r"setting guidance_weight \(--guidance-weight\) is .*finite number"):
        UniversalConfig().with_overrides(guidance_weight=value)
    with pytest.raises(FeatscopeError, match=r"setting latent_lr \(--latent-lr\)"):
        EndToEndConfig().with_overrides(latent_lr=value)


def test_the_command_line_refuses_nan_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["decode", "--target", str(EXAMPLES / "yellow-star.png"), "--wg", "nan", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "give a finite number" in err[0]
    assert not out.exists()


def test_json_files_and_logs_hold_null_where_a_number_is_not_finite(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"median": math.nan, "rows": [1.5, math.inf, {"x": -math.inf}]})
    assert _strict((tmp_path / "m.json").read_text()) == {"median": None, "rows": [1.5, None, {"x": None}]}
    run = RunFolder(tmp_path / "run").open()
    run.log({"distance": [math.nan, 2.0]})
    run.commit()
    assert _strict((tmp_path / "run" / "log.jsonl").read_text()) == {"distance": [None, 2.0]}


def test_a_feature_target_with_nan_is_refused_in_one_line(tmp_path, capsys):
    import torch
    from safetensors.torch import save_file

    save_file({"feature": torch.full((128,), math.nan)}, str(tmp_path / "nan.safetensors"))
    code = main(["decode", "--target", str(tmp_path / "nan.safetensors"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "NaN or infinite" in err[0] and not (tmp_path / "run").exists()


def test_an_output_that_cannot_be_written_is_one_line_and_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["decode", "--target", str(EXAMPLES / "yellow-star.png"), "--steps", "1", "-K", "1", "--quiet",
                 "--out", str(blocker / "run")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("featscope: error: cannot write")
    assert "Not a directory" in err[0] and blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
