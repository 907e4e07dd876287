"""Minimality and reconstruction fidelity of counterfactuals (issue #32), and the world caption by default."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from featscope.images import to_tensor
from featscope.investigate import fidelity
from featscope.investigate.captions import known_caption
from featscope.report import write_report
from featscope.world.render import generate, render
from featscope.world.sample import write_samples

TINY = ["--steps", "3", "--inner-steps", "1", "--taus", "0,1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def green_circle():
    """A small green circle on light (the issue's image) as (1, 3, 32, 32) and its record."""
    _, records = generate(1, seed=3, shape="circle", color="green", size="large", background="light")
    return to_tensor(render(records[0])[None].copy()), records[0]


def _drawn(record, **changes) -> torch.Tensor:
    return to_tensor(render(replace(record, **changes))[None].copy())


def test_a_square_that_also_changes_colour_is_not_minimal(green_circle):
    image, record = green_circle
    square = fidelity.minimality(image, _drawn(record, shape="square"), "shape", "square")
    assert square["changed"] == ["shape"] and square["minimal"] and square["reads_target"]
    yellow = fidelity.minimality(image, _drawn(record, shape="square", color="yellow"), "shape", "square")
    assert yellow["changed"] == ["color", "shape"] and not yellow["minimal"] and yellow["reads_target"]
    kept = fidelity.reconstruction(image, image, 0.05)
    assert fidelity.verdict(True, square, kept) == "clean"
    assert fidelity.verdict(True, yellow, kept) == "also changed color"
    # a neuron's edit has no intended attribute: at most one attribute may change
    assert fidelity.minimality(image, _drawn(record, color="red"), None)["minimal"]
    assert not fidelity.minimality(image, _drawn(record, color="red", radius=5.5), None)["minimal"]
    items = {k: {"minimality": m, "reconstruction": kept, "verdict": fidelity.verdict(True, m, kept)}
             for k, m in (("a", square), ("b", yellow))}  # fmt: skip
    totals = fidelity.aggregate(items)
    assert totals["minimal"]["successes"] == 1 and totals["minimal"]["total"] == 2
    assert totals["changed"]["color"]["successes"] == 1 and totals["changed"]["shape"]["successes"] == 2
    assert totals["clean"]["successes"] == 1 and totals["minimal"]["low"] < 0.5 < totals["minimal"]["high"]


def test_a_reconstruction_that_changed_the_colour_is_flagged(green_circle):
    image, record = green_circle
    threshold = fidelity.reconstruction_threshold("world:ddpm")
    assert threshold is not None and fidelity.reconstruction_threshold("sd:any") is None
    assert not fidelity.reconstruction(image, image, threshold)["poor"]
    recon = _drawn(record, color="yellow")  # the yellow reconstruction of a green circle
    result = _drawn(record, shape="square", color="yellow")
    checks = fidelity.checks(image, recon, result, "world:ddpm", intended="shape", target="square", flipped=True)
    assert checks["reconstruction"]["poor"] and checks["reconstruction"]["changed"] == ["color"]
    assert "poor reconstruction" in checks["verdict"] and checks["verdict"] != "clean"
    line = fidelity.warning("img_to_square", checks["reconstruction"])
    assert line.startswith("img_to_square: the inversion does not hold") and "already changes color" in line
    assert "\n" not in line
    noisy = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert fidelity.reconstruction(image, noisy, threshold, world=False)["poor"]  # by the threshold alone
    assert not fidelity.reconstruction(image, noisy, None, world=False)["poor"]


def test_a_deliberately_bad_inversion_is_flagged_per_image_and_in_the_summary(featscope_main, tmp_path):
    """A wrong caption and no null-text steps: the reconstruction is another image, and the run says so."""
    paths = write_samples(1, tmp_path / "images", seed=2, shape="circle", color="cyan", background="dark")
    out = tmp_path / "bad"
    result = featscope_main("investigate", "word-swap", "--net", "world:shape-net@fc", str(paths[0]), "--start",
                            "circle", "--target", "square", "--out", str(out), *TINY, "--inner-steps", "0",
                            "--prompt", "small red circle top-left on light")  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "world_00000_to_square" / "metrics.json").read_text())
    assert metrics["reconstruction"]["poor"] and "poor reconstruction" in metrics["verdict"]
    warnings = [line for line in result.stdout.splitlines() if "the inversion does not hold the image" in line]
    assert len(warnings) == 1 and warnings[0].startswith("featscope: warning: world_00000_to_square:")
    assert json.loads((out / "summary.json").read_text())["aggregate"]["clean"]["successes"] == 0


def test_the_known_caption_is_the_txt_else_the_records_line(tmp_path):
    paths = write_samples(2, tmp_path, seed=1, shape="circle")
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert known_caption(paths[1]) == records[1]["caption"]
    paths[0].with_suffix(".txt").write_text("small red circle top-left on dark\n")
    assert known_caption(paths[0]) == "small red circle top-left on dark"
    other = tmp_path / "elsewhere" / "world_00001.png"
    other.parent.mkdir()
    other.write_bytes(paths[1].read_bytes())
    assert known_caption(other) is None


def test_word_swap_uses_the_records_caption_and_records_minimality_and_reconstruction(featscope_main, tmp_path):
    paths = write_samples(1, tmp_path / "images", seed=2, shape="circle")
    caption = json.loads((tmp_path / "images" / "records.jsonl").read_text())["caption"]
    out = tmp_path / "swap"
    result = featscope_main("investigate", "word-swap", "--net", "world:shape-net@fc", str(paths[0]), "--start",
                            "circle", "--target", "square", "--out", str(out), *TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "world_00000_to_square" / "metrics.json").read_text())
    assert metrics["prompt"] == caption and metrics["edited_prompt"] == caption.replace("circle", "square")
    assert metrics["minimality"]["intended"] == "shape" and metrics["minimality"]["image"]["shape"] == "circle"
    from featscope.images import load_image

    target, initial = (load_image(out / "world_00000_to_square" / f"{n}.png") for n in ("target", "initial"))
    assert metrics["reconstruction"]["l2"] == pytest.approx(float((initial - target).pow(2).mean().sqrt()), abs=2e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aggregate"]["minimal"]["total"] == 1
    assert "- minimal (only the intended attribute changed" in result.stdout
    page = write_report(out, tmp_path / "report.html").read_text()
    assert f"verdict: {metrics['verdict']} | changed: " in page and "reconstruction L2" in page


def test_invert_uses_the_records_caption_and_records_its_reconstruction_check(featscope_main, tmp_path):
    paths = write_samples(1, tmp_path / "images", seed=5, shape="star")
    caption = json.loads((tmp_path / "images" / "records.jsonl").read_text())["caption"]
    out = tmp_path / "inv"
    result = featscope_main("invert", str(paths[0]), "--out", str(out), "--steps", "3", "--inner-steps", "1",
                            "--device", "cpu", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "world_00000" / "metrics.json").read_text())
    assert metrics["prompt"] == caption
    recon = metrics["reconstruction"]
    assert recon["l2"] == pytest.approx(metrics["l2"]) and recon["threshold"] == 0.087
    said = [line for line in result.stdout.splitlines() if "the inversion does not hold" in line]
    assert len(said) == int(recon["poor"])
