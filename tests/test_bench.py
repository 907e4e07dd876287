"""featscope bench: statistics by hand, then tiny end-to-end runs through the API and the CLI (CPU)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.bench import median_pair_distance, run_bench, wilson_interval
from featscope.bench.metrics import background_deviation, pixel_noise
from featscope.bench.run import PAIR_SEED_OFFSET, PAIRS
from featscope.bench.stats import format_proportion, proportion
from featscope.cli import main
from featscope.errors import FeatscopeError, RunExistsError
from featscope.extractors import load_extractor
from featscope.images import to_tensor
from featscope.losses import feature_loss
from featscope.world.oracle import read_batch
from featscope.world.render import ATTRIBUTES, generate
from featscope.world.splits import split_images

N, SEED, EXTRACTOR = 3, 5, "world:shape-net"
TINY = {"num_steps": 3, "recurrence": 1}
FILES = ("results.json", "results.md", "agreement.png", "distance_vs_evaluations.png", "samples.png")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: with a busy CPU, two threads are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("bench") / "out"
    report = run_bench(out, n=N, seed=SEED, extractors=[EXTRACTOR], settings=TINY, device="cpu", quiet=True)
    return out, report


def saved_images(out, folder: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / folder / f"{i:03d}.png").convert("RGB")) for i in range(N)])


def test_wilson_interval_matches_hand_computation():
    # 8/10: centre (0.8 + z^2/20) / (1 + z^2/10), half-width z/(1 + z^2/10) * sqrt(0.016 + z^2/400)
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert format_proportion(proportion(8, 10)) == "80% [49, 94]"


def test_pixel_noise_is_low_on_rendered_images_and_high_on_speckle():
    flat = np.full((1, 8, 8, 3), 120, np.uint8)
    assert pixel_noise(flat)[0] == 0
    one_dot = flat.copy()
    one_dot[0, 4, 4] = 240  # a lone pixel 120 above its neighbours: 120 * 3 channels / (64 * 3) values
    assert pixel_noise(one_dot)[0] == pytest.approx(120 / 64)
    rendered, _ = generate(8, seed=3)
    speckled = np.clip(rendered + np.random.default_rng(0).normal(0, 8, rendered.shape), 0, 255).astype(np.uint8)
    clean, noisy = pixel_noise(rendered), pixel_noise(speckled)
    assert clean.shape == (8,) and clean.max() < 2 and (noisy > 3 * clean.max()).all()


def test_background_deviation_is_zero_on_rendered_images_and_sees_blotches_and_speckle():
    rendered, _ = generate(8, seed=3)
    assert (background_deviation(rendered) == 0).all()  # the object and its anti-aliased edge are left out
    blotched = rendered.astype(int)
    blotched[:, 3:9, 3:9] += 20  # a faint low-frequency patch, which the 3x3 pixel noise barely sees
    blotched = np.clip(blotched, 0, 255).astype(np.uint8)
    assert (background_deviation(blotched) > 0.5).all() and (pixel_noise(blotched) < 0.5 + pixel_noise(rendered)).all()
    speckled = np.clip(rendered + np.random.default_rng(0).normal(0, 8, rendered.shape), 0, 255).astype(np.uint8)
    assert (background_deviation(speckled) > 3).all()


def test_median_pair_distance_pairs_row_i_with_row_i_plus_half():
    features = torch.tensor([[0.0, 0.0], [1.0, 1.0], [10.0, 0.0], [1.0, 13.0]])
    # pairs (0, 2): 100 and (1, 3): 0 + 144; the median of two is their mean
    assert median_pair_distance(features) == pytest.approx(122.0)


def test_files_and_results_structure(bench):
    out, report = bench
    for name in FILES:
        assert (out / name).is_file(), name
    for name in FILES[2:]:
        assert Image.open(out / name).format == "PNG"
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(report))
    config = report["config"]
    assert (config["n"], config["seed"], config["extractors"], config["presets"]) == (N, SEED, [EXTRACTOR], ["fast"])
    assert {"featscope", "torch", "date", "machine", "backbone", "pair_seed"} <= set(config)
    assert report["chance"] == pytest.approx(
        {"shape": 0.2, "color": 1 / 6, "size": 0.5, "position": 1 / 9, "background": 1 / 3}
    )
    (entry,) = report["extractors"]
    guided, unguided = entry["rows"]
    assert (guided["label"], unguided["label"]) == ("fast", "unguided (fast)")
    assert (guided["settings"]["guidance_weight"], unguided["settings"]["guidance_weight"]) == (0.1, 0.0)
    assert guided["settings"]["num_steps"] == unguided["settings"]["num_steps"] == 3
    # 3 steps, K = 1: one evaluation per step; guided, fast scores the updated estimate in the last step and adds
    # its 159 backward steps there; the unguided twin has no guidance of any kind
    assert (guided["network_evaluations_per_image"], unguided["network_evaluations_per_image"]) == (3 + 1 + 159, 3)
    assert unguided["settings"]["backward_steps"] == 0 and guided["settings"]["backward_steps"] == 159
    assert len(guided["samples"]) == N and guided["wall_seconds_per_image"] > 0
    markdown = (out / "results.md").read_text()
    assert f"## {EXTRACTOR}" in markdown and "| unguided (fast) |" in markdown
    assert re.search(r"\| \d+% \[\d+, \d+\] \|", markdown)


def test_distances_are_relative_to_random_pairs_and_measured_on_saved_images(bench):
    out, report = bench
    extractor = load_extractor(EXTRACTOR)
    pairs, _ = generate(2 * PAIRS, SEED + PAIR_SEED_OFFSET)
    reference = median_pair_distance(extractor.target_features(to_tensor(pairs)))
    (entry,) = report["extractors"]
    assert entry["pair_median_distance"] == pytest.approx(reference, rel=1e-5)
    targets, _ = generate(N, SEED)
    assert (saved_images(out, "images/targets") == targets).all()
    target_features = extractor.target_features(to_tensor(targets))
    for row in entry["rows"]:
        decoded = extractor.target_features(to_tensor(saved_images(out, row["images"])))
        distances = feature_loss(decoded, target_features).numpy()
        relative = [s["relative_distance"] for s in row["samples"]]
        assert [s["distance"] for s in row["samples"]] == pytest.approx(distances, rel=1e-4)
        assert relative == pytest.approx(distances / reference, rel=1e-4)
        assert row["relative_distance"]["median"] == pytest.approx(np.median(relative))
        assert row["relative_distance"]["mean"] == pytest.approx(np.mean(relative))
        noise = pixel_noise(saved_images(out, row["images"]))
        assert [s["pixel_noise"] for s in row["samples"]] == pytest.approx(noise, rel=1e-5)
        background = background_deviation(saved_images(out, row["images"]))
        assert [s["background_deviation"] for s in row["samples"]] == pytest.approx(background, rel=1e-5)


def test_agreement_counts_match_a_hand_count_of_the_oracle(bench):
    out, report = bench
    _, records = generate(N, SEED)
    for row in report["extractors"][0]["rows"]:
        readings = read_batch(saved_images(out, row["images"]))
        assert row["valid"]["successes"] == sum(r.valid for r in readings)
        for name in ATTRIBUTES:
            pairs = zip(readings, records, strict=True)
            count = sum(r.valid and getattr(r, name) == getattr(rec, name) for r, rec in pairs)
            entry = row["agreement"][name]
            assert (entry["successes"], entry["total"]) == (count, N), name
            assert (entry["low"], entry["high"]) == pytest.approx(wilson_interval(count, N))


def test_refuses_an_existing_result_or_bad_settings_before_any_work(bench, tmp_path):
    out, _ = bench
    with pytest.raises(RunExistsError, match="results.json.*--overwrite"):
        run_bench(out, n=N, extractors=[EXTRACTOR], settings=TINY)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunExistsError, match="is a file"):
        run_bench(tmp_path / "file", n=N, extractors=[EXTRACTOR], settings=TINY)
    with pytest.raises(FeatscopeError, match="unknown preset 'fastest'"):
        run_bench(tmp_path / "new", presets=["fastest"])
    with pytest.raises(FeatscopeError, match="unknown solver setting"):
        run_bench(tmp_path / "new", settings={"steps": 3})
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_the_whole_result(bench, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(bench[0], out)
    settings = {"num_steps": 2, "recurrence": 1}
    run_bench(out, n=2, extractors=[EXTRACTOR], include_unguided=False, settings=settings, quiet=True, overwrite=True)
    assert json.loads((out / "results.json").read_text())["config"]["n"] == 2
    assert sorted(p.name for p in (out / "images" / "targets").iterdir()) == ["000.png", "001.png"]
    assert not (out / "images" / "world-shape-net" / "fast-unguided").exists()


def test_cli_writes_results_prints_the_table_and_refuses_to_overwrite(tmp_path, capsys, featscope_main):
    out = str(tmp_path / "cli")
    args = ["bench", "decode", "--n", "2", "--extractors", EXTRACTOR, "--steps", "2", "-K", "1", "--no-unguided"]
    args += ["--out", out]
    result = featscope_main(*args, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "| row | rel. distance (median)" in result.stdout and "| fast |" in result.stdout
    report = json.loads((tmp_path / "cli" / "results.json").read_text())
    (entry,) = report["extractors"]
    assert [row["label"] for row in entry["rows"]] == ["fast"]
    assert entry["rows"][0]["settings"]["num_steps"] == 2 and report["config"]["n"] == 2
    assert (report["config"]["split"], report["config"]["seed"]) == ("test", None)  # held out by default
    targets = [np.asarray(Image.open(tmp_path / "cli" / "images" / "targets" / f"{i:03d}.png")) for i in range(2)]
    assert np.array_equal(np.stack(targets)[..., :3], split_images(2, "test")[0])
    assert main(args) == 2  # in-process: the refusal comes before any model is loaded
    error = capsys.readouterr().err
    assert "--overwrite" in error and len(error.strip().splitlines()) == 1


def test_cli_help_explains_the_numbers(featscope_main):
    result = featscope_main("bench", "decode", "--help")
    assert result.returncode == 0
    for term in (
        "rel. distance",
        "Wilson",
        "chance",
        "pixel noise",
        "evals/image",
        "peak MB",
        "unguided",
        "--overwrite",
        "best-of-n",
        "exemplars",
        "grid.png",
    ):
        assert term in result.stdout, term
