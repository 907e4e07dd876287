"""bench investigate on a 64 px backbone: patterns64 scenes, world:shape-net-64 against world:tag-net, whose planted
shortcut is the corner tag. A tiny end-to-end run on a random 64 px Stable Diffusion pipeline with both networks
trained for a few steps (CPU), and the shortcut reading and background masks on rendered scenes."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from featscope.bench.investigation import (
    INVESTIGATION_KINDS,
    SHORTCUT_COLOR,
    background_masks,
    object_masks,
    select,
)
from featscope.images import to_tensor
from featscope.world import train
from featscope.world.latent import TINY, build_pipeline, save_pipeline
from featscope.world.patterns import TAG_BOX, render_pattern, sample_pattern_record
from featscope.world.render import SHAPES, object_mask, render, sample_record

FIRST, SECOND = "world:shape-net-64", "world:tag-net"
N, ITERATIONS = 2, 2  # n // 8 -> 1 guided sample per class
SOLVER = ["--steps", "2", "--iterations", str(ITERATIONS), "--cutouts", "1"]
# per guided sample: 3 scoring passes (each iteration and the last iterate), and per iteration the loss on the
# last min(loss_steps 3, steps 2) = 2 x0 estimates with 1 cutout each
EVALUATIONS = (ITERATIONS + 1) + ITERATIONS * 2 * 1


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A random 64 px latent-world pipeline and the two 64 px networks trained for 3 steps each."""
    root = tmp_path_factory.mktemp("inv-kinds")
    files = {"pipe": save_pipeline(build_pipeline(TINY, seed=1), root / "pipe")}
    with pytest.MonkeyPatch.context() as patch:  # their accuracies on 16 images, not 2,000 per probe
        patch.setattr(train, "evaluate_classifier", functools.partial(train.evaluate_classifier, n=16))
        for spec in (FIRST, SECOND):
            files[spec] = root / f"{spec.removeprefix('world:')}.safetensors"
            train.train_classifier(spec.removeprefix("world:"), files[spec], steps=3, quiet=True)
    return files


def _cli(models: dict, out, *extra: str) -> list[str]:
    weights = f"{FIRST}={models[FIRST]},{SECOND}={models[SECOND]}"
    return ["bench", "investigate", "--n", str(N), "--backbone", f"sd:{models['pipe']}", "--extractor-weights",
            weights, *SOLVER, *extra, "--device", "cpu", "--quiet", "--out", str(out)]  # fmt: skip


@pytest.fixture(scope="module")
def bench(models, tmp_path_factory) -> tuple:
    """``featscope bench investigate`` (one counterfactual row and the difference) on the 64 px backbone."""
    from featscope.cli import main

    out = tmp_path_factory.mktemp("inv-kinds") / "out"
    args = _cli(models, out, "--methods", "counterfactual,difference", "--rows", "no regulariser", "--batch", "2")
    assert main(args) == 0
    return out, json.loads((out / "results.json").read_text())


def test_a_64px_backbone_investigates_patterned_scenes_with_the_tag_network(bench, models):
    out, report = bench
    config = report["config"]
    assert (config["kind"], config["first"], config["second"]) == ("patterns64", FIRST, SECOND)
    assert config["extractor_weights"] == {FIRST: str(models[FIRST]), SECOND: str(models[SECOND])}
    counterfactual = report["results"]["counterfactual"]
    assert counterfactual["network"] == FIRST and list(counterfactual["rows"]) == ["no regulariser"]
    assert counterfactual["rows"]["no regulariser"]["target_confidence_above_0.5"]["total"] == N
    difference = report["results"]["difference"]
    assert (difference["first"], difference["second"]) == (FIRST, SECOND)
    assert difference["shortcut"] == {"attribute": "tag", "cue": {"star": "tagged"}}
    assert difference["disagreement"]["total"] == len(SHAPES)
    shortcut = difference["disagreeing_shortcut_of_second_prediction"]
    assert shortcut["total"] == difference["disagreement"]["successes"]
    for entry in difference["per_class"].values():  # the tag as the oracle reads it, no colour keys
        assert set(entry["shortcut_values"]) <= {"tagged", "untagged", None} and "colors" not in entry
        assert "disagreeing_color_of_second_prediction" not in entry
    markdown = (out / "results.md").read_text()
    assert "patterns64 scenes" in markdown and f"{FIRST} vs {SECOND}" in markdown
    assert "carry the corner tag while world:tag-net predicts star" in markdown


def test_the_unguided_baseline_has_as_many_samples_as_the_guided_network_evaluations(bench):
    difference = bench[1]["results"]["difference"]
    equal = difference["equal_evaluations"]
    guided, unguided = equal["guided"], equal["unguided"]
    assert guided["samples_per_class"] == difference["samples_per_class"] == 1 and guided["iterations"] == ITERATIONS
    assert unguided["samples_per_class"] == guided["samples_per_class"] * EVALUATIONS
    assert unguided["network_evaluations_per_class"] == guided["network_evaluations_per_class"] == EVALUATIONS
    assert unguided["disagreement"]["total"] == len(SHAPES) * EVALUATIONS
    assert unguided["disagreeing_shortcut"]["total"] == unguided["disagreement"]["successes"]
    assert guided["disagreement"] == difference["disagreement"]  # the guided side: the measurement's own counts
    assert guided["disagreeing_shortcut"] == difference["disagreeing_shortcut_of_second_prediction"]
    for side in (guided, unguided):
        assert side["classes_with_shortcut"]["total"] == len(SHAPES)
        assert side["classes_with_shortcut"]["successes"] <= side["disagreeing_shortcut"]["successes"]
    assert "At equal network evaluations" in (bench[0] / "results.md").read_text()


def test_weights_must_be_for_the_networks_of_the_bench(models, tmp_path, capsys):
    from featscope.cli import main

    args = _cli(models, tmp_path / "out", "--methods", "difference", "--second", "world:color-net-64")
    assert main(args) == 2
    assert "neither the network under study" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class Fixed(torch.nn.Module):
    """A stand-in network that calls every image ``label``."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.labels, self.index = SHAPES, SHAPES.index(label)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def network(self, images: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(images), len(self.labels))
        logits[:, self.index] = 10.0
        return logits


def test_the_tag_shortcut_is_a_read_tag_with_the_second_network_saying_star():
    rng = np.random.default_rng(0)
    records = [sample_pattern_record(rng, shape="circle", tag=tag) for tag in ("tagged", "untagged")]
    images = to_tensor(np.stack([render_pattern(r) for r in records]))
    kind = INVESTIGATION_KINDS["patterns64"]
    picked = select(Fixed("circle"), Fixed("star"), SHAPES.index("circle"), images, kind)
    assert picked.chosen == [True, True] and picked.says == ["star", "star"]
    assert picked.values == ["tagged", "untagged"] and picked.follows == [True, False]
    assert select(Fixed("circle"), Fixed("square"), 0, images, kind).follows == [False, False]  # not star: no shortcut


def test_the_colour_shortcut_of_shapes32_is_unchanged():
    rng = np.random.default_rng(1)
    records = [sample_record(rng, shape="circle", color=SHORTCUT_COLOR[s]) for s in ("square", "star")]
    images = to_tensor(np.stack([render(r) for r in records]))
    picked = select(Fixed("circle"), Fixed("square"), 0, images, INVESTIGATION_KINDS["shapes32"])
    assert picked.values == [SHORTCUT_COLOR["square"], SHORTCUT_COLOR["star"]] and picked.follows == [True, False]


def test_the_background_is_neither_the_object_nor_the_tag():
    rng = np.random.default_rng(2)
    tagged, plain = (sample_pattern_record(rng, tag=tag) for tag in ("tagged", "untagged"))
    masks = object_masks([tagged, plain], 64)
    background = background_masks(masks, [tagged, plain])
    start, stop = TAG_BOX
    assert (background[0, 0, start:stop, start:stop] == 0).all()
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[start:stop, start:stop] = True
    assert torch.equal(background[0, 0][~inside], 1 - torch.from_numpy(object_mask(tagged, 64))[~inside])
    assert torch.equal(background[1, 0], 1 - torch.from_numpy(object_mask(plain, 64)))
    shapes = [sample_record(rng)]  # shapes32: one minus the object's coverage, as before
    expected = 1 - torch.from_numpy(object_mask(shapes[0]))
    assert torch.equal(background_masks(object_masks(shapes, 32), shapes)[0, 0], expected)
