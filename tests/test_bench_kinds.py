"""bench decode on either scene kind, chosen from the backbone's image size: a tiny end-to-end run on a random
64 px Stable Diffusion pipeline (patterns64 scenes) with a 64 px world classifier trained for a few steps (CPU)."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from PIL import Image

from featscope.bench.run import backbone_kind
from featscope.bench.stats import chance_levels
from featscope.errors import FeatscopeError
from featscope.world import train
from featscope.world.latent import TINY, build_pipeline, save_pipeline
from featscope.world.pattern_oracle import read_pattern_batch
from featscope.world.splits import split_images
from tiny_sd import save_tiny_sd

N, NET = 2, "world:shape-net-64"
TINY_SOLVER = ("--steps", "2", "-K", "1", "--backward-steps", "0")  # fast's chain in 2 steps: 3 evaluations


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A random 64 px latent-world pipeline and a 64 px shape network trained for 3 steps."""
    root = tmp_path_factory.mktemp("kinds")
    pipe = save_pipeline(build_pipeline(TINY, seed=1), root / "pipe")
    with pytest.MonkeyPatch.context() as patch:  # its accuracies on 16 images, not 2,000 per probe
        patch.setattr(train, "evaluate_classifier", functools.partial(train.evaluate_classifier, n=16))
        train.train_classifier("shape-net-64", root / "net.safetensors", steps=3, quiet=True)
    return {"pipe": pipe, "net": root / "net.safetensors"}


@pytest.fixture(scope="module")
def bench(models, tmp_path_factory) -> tuple:
    """``featscope bench decode`` on the 64 px backbone through the CLI, and its results.json."""
    from featscope.cli import main

    out = tmp_path_factory.mktemp("kinds") / "out"
    args = ["bench", "decode", "--n", str(N), "--backbone", f"sd:{models['pipe']}", "--extractors", NET]
    args += ["--extractor-weights", f"{NET}={models['net']}", *TINY_SOLVER, "--no-unguided", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_a_64px_backbone_benches_patterned_scenes_scored_by_their_oracle(bench, models):
    out, report = bench
    config = report["config"]
    assert (config["kind"], config["split"], config["n"]) == ("patterns64", "test", N)
    assert config["extractor_weights"] == {NET: str(models["net"])}
    targets = np.stack([np.asarray(Image.open(out / "images" / "targets" / f"{i:03d}.png")) for i in range(N)])
    expected, records = split_images(N, "test", kind="patterns64")
    assert targets.shape == (N, 64, 64, 3) and np.array_equal(targets, expected)
    attributes = ["shape", "color", "size", "position", "background", "pattern", "tag"]  # results.json sorts keys
    assert report["chance"] == chance_levels("patterns64") and list(chance_levels("patterns64")) == attributes
    assert report["chance"]["tag"] == pytest.approx(0.85) and report["chance"]["pattern"] == 0.25
    ceiling = report["oracle_on_targets"]  # the patterned oracle reads every attribute of a rendered target back
    assert set(ceiling["agreement"]) == set(attributes) and ceiling["valid"]["rate"] == 1.0
    assert all(ceiling["agreement"][name]["successes"] == N for name in attributes)
    (row,) = report["extractors"][0]["rows"]
    assert set(row["agreement"]) == set(attributes) and row["network_evaluations_per_image"] == 3
    decoded = np.stack([np.asarray(Image.open(out / row["images"] / f"{i:03d}.png")) for i in range(N)])
    readings = read_pattern_batch(decoded)
    for sample, record, reading in zip(row["samples"], records, readings, strict=True):
        assert sample["target"] == record.attributes() and set(sample["agreement"]) == set(attributes)
        assert sample["valid"] == reading.valid and sample["reading"] == reading.attributes()
    markdown = (out / "results.md").read_text()
    assert "patterns64 scenes" in markdown and "| valid | " + " | ".join(attributes) + " | evals/image |" in markdown


def test_a_backbone_of_no_kinds_size_is_a_one_line_error(tmp_path, capsys):
    from featscope.cli import main

    save_tiny_sd(tmp_path / "sd16")  # 16 px images
    args = ["bench", "decode", "--n", "1", "--backbone", f"sd:{tmp_path / 'sd16'}", "--extractors", NET]
    assert main([*args, "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "16x16 px" in error and "shapes32 32 px, patterns64 64 px" in error
    assert not (tmp_path / "out" / "results.json").exists()


def test_the_kind_follows_the_backbones_image_size():
    class Sized:
        spec = "test:backbone"

        def __init__(self, size: tuple[int, int]) -> None:
            self.image_size = size

    assert backbone_kind(Sized((32, 32))) == "shapes32" and backbone_kind(Sized((64, 64))) == "patterns64"
    with pytest.raises(FeatscopeError, match="64x32 px"):
        backbone_kind(Sized((64, 32)))


def test_extractor_weights_must_name_a_benched_extractor_and_be_spec_file_pairs(tmp_path, capsys):
    from featscope.cli import main

    base = ["bench", "decode", "--n", "1", "--extractors", NET, "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*base, "--extractor-weights", "world:color-net-64=x.safetensors"]) == 2
    assert "not among the extractors" in capsys.readouterr().err
    assert main([*base, "--extractor-weights", "net.safetensors"]) == 2
    assert "SPEC=FILE" in capsys.readouterr().err
