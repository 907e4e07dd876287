"""bench visualize: class logits and neurons by featscope, exemplars and the peers, in a tiny run on the CPU."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.bench.report import unit_grid_figure
from featscope.bench.visualization import featscope_evaluations, run_visualization_bench
from featscope.cli import main
from featscope.extractors import load_extractor
from featscope.solvers.configs import endtoend_defaults
from featscope.world.splits import split_images

NET = "world:shape-net@fc"
TINY = {"num_steps": 3, "iterations": 2, "cutouts": 2}  # 2 + 1 + 2 x 3 loss steps x 2 cutouts = 15 evaluations
POOL = 1016  # the tuning split


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("visualize") / "out"
    report = run_visualization_bench(out, net=NET, classes=["star"], channels=[0], samples=1,
                                     compare=["featscope", "exemplars"], device="cpu", quiet=True, **TINY)  # fmt: skip
    return out, report


def rows_of(report) -> dict:
    return {row["label"]: row for row in report["rows"]}


def values(row) -> dict:
    return {s["unit"]: s["value"] for s in row["samples"]}


def test_featscope_raises_the_class_logit_and_the_neuron_above_its_plain_sample(bench):
    _, report = bench
    rows = rows_of(report)
    assert list(rows) == ["featscope", "unguided", "exemplars"]
    guided, plain = values(rows["featscope"]), values(rows["unguided"])
    assert set(guided) == {"star", "neuron 0"}
    for unit in guided:  # scored on the saved 8-bit images, not read from the solver
        assert guided[unit] > plain[unit] + 0.1, unit
    for s in rows["featscope"]["samples"]:
        before, after = s["core_activation_before_after"]
        assert after > before and s["value"] == pytest.approx(after, rel=0.05, abs=0.05)
        assert s["best_iteration"] >= 1
    evaluations = featscope_evaluations(endtoend_defaults("world:ddpm", "neuron").with_overrides(**TINY))
    assert evaluations == 15 == rows["featscope"]["classes"]["network_evaluations_per_image"]
    assert report["peer_budget"] == 15


def test_every_row_is_scored_the_same_way_with_wilson_intervals(bench):
    _, report = bench
    for row in report["rows"]:
        for key in ("classes", "neurons"):
            entry = row[key]
            assert entry["n"] == 1 and entry["valid"]["total"] == 1 and entry["reached"]["total"] == 1
            assert 0 <= entry["reached"]["low"] <= entry["reached"]["rate"] <= entry["reached"]["high"] <= 1
        assert row["classes"]["shows_class"]["total"] == 1 and "shows_class" not in row["neurons"]
        for s in row["samples"]:  # the verdicts follow from the numbers
            if s["kind"] == "class":
                assert s["reached"] == (s["probability"] > 0.5)
                assert s["shows_class"] == (s["valid"] and s["reading"]["shape"] == "star")
            else:
                unit = next(u for u in report["units"] if u["name"] == s["unit"])
                assert s["reached"] == (s["value"] >= 3 * unit["held_out_mean"])


def test_exemplars_are_the_pool_images_with_the_highest_value(bench):
    out, report = bench
    row = rows_of(report)["exemplars"]
    assert row["classes"]["network_evaluations_per_image"] == POOL
    pool, _ = split_images(POOL, "tuning")
    net = load_extractor(NET, device="cpu")
    with torch.no_grad():
        logits = net.network(net.preprocess(torch.from_numpy(pool).permute(0, 3, 1, 2).float() / 255))
    star = int(logits[:, 3].argmax())
    sample = next(s for s in row["samples"] if s["unit"] == "star")
    assert sample["pool_index"] == star and sample["value"] == pytest.approx(float(logits[star, 3]), rel=1e-4)
    assert sample["at_least_best_exemplar"]
    saved = np.asarray(Image.open(out / "images" / "exemplars" / "class-star_0.png").convert("RGB"))
    assert (saved == pool[star]).all()
    assert all(s["valid"] for s in row["samples"])  # real world images


def test_the_grid_table_and_images_are_written(bench):
    out, _ = bench
    grid = Image.open(out / "grid.png")
    images = [np.asarray(Image.open(out / "images" / row / "class-star_0.png")) for row in ("featscope", "unguided")]
    one_row = Image.open(io.BytesIO(unit_grid_figure(["star", "neuron 0"], [("featscope", images)])))
    assert grid.format == "PNG" and grid.width == pytest.approx(one_row.width, abs=20)  # the same 2 columns
    assert grid.height > 2 * one_row.height  # and 3 rows, one per method
    markdown = (out / "results.md").read_text()
    assert "## Class logits" in markdown and "## Neurons" in markdown and "| featscope | 1 |" in markdown
    for row in ("featscope", "unguided", "exemplars"):
        for name in ("class-star_0.png", "neuron-0_0.png"):
            assert (out / "images" / row / name).stat().st_size > 0
    record = json.loads((out / "results.json").read_text())
    assert record["pool"]["images"] == POOL and record["skipped"] == []


def test_lucent_spends_featscopes_evaluations_and_raises_the_logit(tmp_path):
    pytest.importorskip("lucent")
    from featscope.bench import peers

    report = run_visualization_bench(tmp_path / "run", net=NET, classes=["star"], channels=[], samples=2,
                                     compare=["lucent"], device="cpu", quiet=True, **TINY)  # fmt: skip
    (row,) = report["rows"]
    assert row["label"] == "lucent" and row["settings"]["steps"] == 15 and row["neurons"] is None
    assert row["classes"]["network_evaluations_per_image"] == 15 and row["classes"]["n"] == 2
    unit = report["units"][0]
    assert all(s["value"] > unit["pool_mean"] + 1 for s in row["samples"])
    net = load_extractor(NET, device="cpu")  # lucent names the input of fc by the module that outputs it
    assert peers.lucent_layer(net.network, "fc", True, 32) == "pool"
    assert peers.lucent_layer(net.network, "fc", False, 32) == "fc"
    settings = {**peers.LUCENT, "steps": 2}
    peers.lucent_visualize(net.network, net.preprocess, "fc", 3, 1, 32, 0, settings)
    assert not any(m._forward_hooks for m in net.network.modules())  # lucent's hooks are taken off again


def test_a_missing_peer_package_skips_its_row_with_a_one_line_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "horama", None)  # import horama fails as if not installed
    args = ["bench", "visualize", "--classes", "star", "--channels", "none", "--samples", "1",
            "--compare", "maco,exemplars", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    error = capsys.readouterr().err.strip().splitlines()
    note = "skipped row 'maco': package 'horama' is not installed (pip install 'featscope[peers]')"
    assert error == [note]
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [row["label"] for row in report["rows"]] == ["exemplars"] and report["skipped"] == [note]


def test_unknown_rows_and_units_are_one_line_errors(tmp_path, capsys):
    for extra in (["--compare", "deepdream"], ["--classes", "hexagon"], ["--channels", "128"]):
        args = ["bench", "visualize", "--samples", "1", *extra, "--device", "cpu", "--out", str(tmp_path / "run")]
        assert main(args) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and ("deepdream" in error[0] or "hexagon" in error[0] or "128" in error[0]), error
    assert not (tmp_path / "run").exists()


def test_the_command_line_names_the_rows_without_importing_the_bench():
    from featscope.bench.visualization import ROWS
    from featscope.cli.bench import VISUALIZE_ROWS

    assert VISUALIZE_ROWS == ROWS


def test_the_chosen_prompt_row_starts_a_class_logit_from_its_class_word(tmp_path):
    """--prompt chosen: featscope's row starts each unit from DiG-IN's prompt, as investigate neuron does; the star
    logit's plain samples are raised most by the word 'star', and the choice is recorded per image."""
    report = run_visualization_bench(tmp_path / "out", net=NET, classes=["star"], channels=[], samples=1,
                                     compare=["featscope"], prompt="chosen", device="cpu", quiet=True,
                                     **{**TINY, "num_steps": 8})  # fmt: skip
    sample = rows_of(report)["featscope"]["samples"][0]
    assert sample["prompt"] == "star" and sample["prompt_choice"]["word"] == "star"
    means = sample["prompt_choice"]["mean_activation"]
    assert max(means, key=means.get) == "star" and report["config"]["prompt"] == "chosen"
