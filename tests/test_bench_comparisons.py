"""bench decode --compare: best-of-N, dataset exemplars and the peer rows, in a tiny run on the CPU."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.backbones import load_backbone
from featscope.bench import run_bench
from featscope.bench.baselines import SAMPLE_SEED_OFFSET, exemplar_pool
from featscope.bench.peers import maco_spectrum
from featscope.bench.targets import TargetSource
from featscope.cli import main
from featscope.devices import generators_for
from featscope.extractors import load_extractor
from featscope.images import to_tensor, to_uint8
from featscope.losses import feature_loss
from featscope.sampling import sample
from featscope.world.splits import split_images

N, EXTRACTOR = 2, "world:shape-net"
TINY = {"num_steps": 2, "recurrence": 1, "backward_steps": 0}  # fast's chain, 2 steps: 3 network evaluations
PEERS = [name for name, module in (("lucent", "lucent"), ("maco", "horama"), ("accentuation", "horama"))
         if importlib.util.find_spec(module)]  # fmt: skip


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    report = run_bench(
        out, n=N, split="tuning", extractors=[EXTRACTOR], include_unguided=False, settings=TINY, device="cpu",
        compare=["best-of-n", "exemplars", *PEERS], quiet=True,
    )  # fmt: skip
    return out, report


def rows_of(report) -> dict:
    return {row["label"]: row for row in report["extractors"][0]["rows"]}


def saved(out, folder: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / folder / f"{i:03d}.png").convert("RGB")) for i in range(N)])


def test_rows_are_scored_like_every_row_and_drawn_in_the_grid(bench):
    out, report = bench
    rows = rows_of(report)
    assert list(rows) == ["fast", "best-of-n", "exemplars", *PEERS]
    for row in rows.values():
        assert len(row["samples"]) == N and {"valid", "agreement", "background_deviation"} <= set(row)
        assert row["wall_seconds_per_image"] > 0
    assert report["config"]["compare"] == ["best-of-n", "exemplars", *PEERS] and report["skipped"] == []
    grid = Image.open(out / "grid.png")
    assert grid.format == "PNG" and grid.height > grid.width / 2  # a row per method under the targets
    markdown = (out / "results.md").read_text()
    assert "| best-of-n |" in markdown and "- exemplars: pool the test split" in markdown


def test_best_of_n_keeps_the_nearest_of_n_unguided_samples_with_fasts_evaluations(bench):
    out, report = bench
    rows = rows_of(report)
    n_samples = rows["fast"]["network_evaluations_per_image"]
    assert n_samples == 3 and rows["best-of-n"]["network_evaluations_per_image"] == n_samples
    assert rows["best-of-n"]["settings"]["samples"] == n_samples
    seeds = [SAMPLE_SEED_OFFSET + j for j in range(n_samples)]
    backbone = load_backbone("world:ddpm", device="cpu")
    images = to_uint8(sample(backbone, generators_for(seeds, torch.device("cpu")), num_steps=2, sampler="ddim"))
    extractor = load_extractor(EXTRACTOR)
    targets = extractor.target_features(to_tensor(split_images(N, "tuning")[0]))
    candidates = extractor.target_features(to_tensor(images))
    for i, s in enumerate(rows["best-of-n"]["samples"]):
        distances = feature_loss(candidates, targets[i].expand_as(candidates))
        assert s["distance"] == pytest.approx(float(distances.min()), rel=1e-4)
    chosen = saved(out, rows["best-of-n"]["images"])
    assert all(any((c == image).all() for image in images) for c in chosen)


def test_exemplars_are_the_nearest_of_a_held_out_pool_without_the_targets(bench):
    out, report = bench
    targets = split_images(N, "tuning")[0]
    pool, name = exemplar_pool(TargetSource("tuning"), targets)
    assert name == "the test split (1017 images)" and len(pool) == 1017
    assert (pool == split_images(1017, "test")[0]).all()
    extractor = load_extractor(EXTRACTOR)
    pool_features = extractor.target_features(to_tensor(pool))
    target_features = extractor.target_features(to_tensor(targets))
    row = rows_of(report)["exemplars"]
    for i, s in enumerate(row["samples"]):
        distances = feature_loss(pool_features, target_features[i].expand_as(pool_features))
        assert s["distance"] == pytest.approx(float(distances.min()), rel=1e-4)
    assert row["network_evaluations_per_image"] == 1017
    # targets drawn from the pool's own split are left out of it
    inside = split_images(5, "test")[0][[1, 3]]
    smaller, name = exemplar_pool(TargetSource(seed=3), inside)
    assert name == "the tuning split (1016 images)"
    tuning = exemplar_pool(TargetSource("test"), inside)[0]
    assert len(tuning) == 1016
    smaller, _ = exemplar_pool(TargetSource("tuning"), inside)
    assert len(smaller) == 1015 and not (smaller[:, None] == inside[None]).all(axis=(2, 3, 4)).any()


def test_maco_spectrum_is_the_mean_fft_magnitude_in_decorrelated_colour():
    images, _ = split_images(4, "tuning")
    spectrum = maco_spectrum(images)
    assert spectrum.shape == (3, 32, 17) and (spectrum >= 0).all()
    flat = np.full((2, 32, 32, 3), 90, np.uint8)
    flat[1] = 200
    assert np.allclose(maco_spectrum(flat), 0)  # a flat image standardises to zero: no magnitude at all


@pytest.mark.skipif(not PEERS, reason="the peers extra is not installed")
def test_peer_rows_spend_about_fasts_evaluations_and_match_the_feature(bench):
    _, report = bench
    rows = rows_of(report)
    for name in PEERS:
        assert 250 <= rows[name]["network_evaluations_per_image"] <= 270, name
        assert rows[name]["relative_distance"]["median"] < 1, name  # nearer the target than a random world image


@pytest.mark.skipif("accentuation" not in PEERS, reason="Horama is not installed (the extra featscope[peers])")
def test_feature_accentuation_starts_from_each_targets_plain_sample_and_moves_it_toward_the_feature(bench):
    out, report = bench
    row = rows_of(report)["accentuation"]
    backbone, extractor = load_backbone("world:ddpm", device="cpu"), load_extractor(EXTRACTOR)
    starts = to_tensor(to_uint8(sample(backbone, generators_for(range(N), torch.device("cpu")), num_steps=2,
                                       sampler="ddim")))  # fmt: skip
    targets = extractor.target_features(to_tensor(split_images(N, "tuning")[0]))
    results = to_tensor(saved(out, row["images"]))
    start_distance = feature_loss(extractor.target_features(starts), targets)
    result_distance = feature_loss(extractor.target_features(results), targets)
    assert (result_distance < 0.75 * start_distance).all()  # accentuated toward the target's feature
    to_own = (results - starts).pow(2).mean((1, 2, 3))
    to_other = (results - starts.flip(0)).pow(2).mean((1, 2, 3))
    assert (to_own < to_other).all()  # and still its own seed image, not the other's
    assert row["unet_equivalents_per_image"] == 2 and "decode seed" in row["settings"]["seed_image"]


def test_a_missing_peer_package_skips_its_row_with_a_one_line_note(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lucent", None)  # import lucent fails as if not installed
    args = ["bench", "decode", "--n", "1", "--extractors", EXTRACTOR, "--steps", "1", "-K", "1", "--no-unguided"]
    args += ["--backward-steps", "0", "--compare", "lucent,exemplars", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(args) == 0
    error = capsys.readouterr().err.strip().splitlines()
    how = "pip install 'featscope[peers]' && pip install --no-deps torch-lucent==0.1.8"
    note = f"skipped row 'lucent': package 'lucent' is not installed ({how})"
    assert error == [note]
    report = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [row["label"] for row in report["extractors"][0]["rows"]] == ["fast", "exemplars"]
    assert report["skipped"] == [note]


def test_an_unknown_comparison_row_is_a_one_line_error(tmp_path, capsys):
    args = ["bench", "decode", "--n", "1", "--compare", "best-of-3", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "unknown comparison row 'best-of-3'" in error[0]
    assert not (tmp_path / "run").exists()
