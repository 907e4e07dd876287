"""The shipped world models, through the public loaders: accuracy as documented, guided decoding works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import featscope
from featscope.bench.run import pair_reference
from featscope.devices import generators_for
from featscope.images import to_tensor
from featscope.sampling import sample
from featscope.world.models import load_classifier
from featscope.world.render import ATTRIBUTES, COLORS, generate, render
from featscope.world.train import evaluate_classifier

NETS = ["shape-net", "color-net", "spurious-net"]


def _shipped(name: str):
    from featscope.world.loaders import weights_path

    path = weights_path(name)
    if not path.exists():
        pytest.skip(f"{name} is not shipped yet")
    return path


@pytest.mark.parametrize("name", NETS)
def test_shipped_networks_reach_their_documented_accuracy(name):
    _, meta = load_classifier(_shipped(name))
    extractor = featscope.load_extractor(f"world:{name}@fc")
    measured = evaluate_classifier(extractor.network, name, n=600, seed=424242)
    for key, value in measured.items():
        assert abs(value - meta["metrics"][key]) <= 0.06, (key, value, meta["metrics"])
    attribute = "color" if name == "color-net" else "shape"
    assert extractor.labels == ATTRIBUTES[attribute]


def test_spurious_net_relies_on_colour_and_shape_net_does_not():
    _shipped("spurious-net")
    spurious = evaluate_classifier(featscope.load_extractor("world:spurious-net@fc").network, "spurious-net", n=400)
    shape_net = evaluate_classifier(featscope.load_extractor("world:shape-net@fc").network, "shape-net", n=400)
    assert shape_net["accuracy_color_swapped"] >= 0.95
    assert spurious["accuracy_color_swapped"] <= spurious["accuracy_clean"] - 0.4, spurious


def test_world_ddpm_loads_and_samples_the_right_shape():
    backbone = featscope.load_backbone("world:ddpm")
    assert backbone.image_size == (32, 32) and backbone.has_prompts
    images = sample(backbone, generators_for([0, 1], torch.device("cpu")), prompts=["red star", ""], num_steps=4)
    assert images.shape == (2, 3, 32, 32) and torch.isfinite(images).all()


def test_default_decoding_beats_the_unguided_sample():
    extractor = featscope.load_extractor("world:shape-net")
    images, _ = generate(3, seed=99)
    target = extractor.target_features(to_tensor(images))
    scale = pair_reference(extractor, seed=5)
    settings = dict(num_steps=10, recurrence=2, quiet=True)
    guided = featscope.decode(features=target, **settings)
    unguided = featscope.decode(features=target, guidance_weight=0.0, **settings)
    rel_guided = np.median([m["best_distance"] for m in guided.metrics]) / scale
    rel_unguided = np.median([m["best_distance"] for m in unguided.metrics]) / scale
    assert rel_guided <= 0.5 * rel_unguided, (rel_guided, rel_unguided)


def test_colour_swap_keeps_the_rendered_shape():
    images, records = generate(1, seed=3)
    other = next(c for c in COLORS if c != records[0].color)
    swapped = render(type(records[0])(**{**records[0].to_dict(), "color": other}))
    assert (swapped != images[0]).any()
    background = (images[0] == swapped).all(-1)
    assert background.mean() > 0.5  # only the object's pixels changed
