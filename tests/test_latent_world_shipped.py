"""The shipped latent world (``world:latent``, Stable Diffusion 1.x's layout) and its 64 px networks, through the
loaders users run: diffusers loads the folder unchanged, guided decoding works through the VAE, and each network
relies on what its training planted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

import featscope
from featscope.bench.run import pair_reference
from featscope.images import to_tensor
from featscope.world.loaders import weights_path, world_folder
from featscope.world.pattern_oracle import read_pattern_batch
from featscope.world.splits import split_images, split_records
from featscope.world.train import evaluate_classifier

NETS = ["shape-net-64", "color-net-64", "pattern-net", "tag-net"]


def _shipped_pipeline():
    folder = world_folder("latent")
    if not (folder / "model_index.json").is_file():
        pytest.skip("world:latent is not shipped")
    return folder


def _shipped_net(name: str):
    if not weights_path(name).is_file():
        pytest.skip(f"world:{name} is not shipped")


def test_diffusers_loads_the_shipped_latent_world_unchanged_and_draws_the_caption():
    pipe = StableDiffusionPipeline.from_pretrained(_shipped_pipeline())
    captions = ["large red striped circle middle-center on dark untagged", "large blue dotted square top-left on light"]
    out = pipe(captions, num_inference_steps=20, height=64, width=64, output_type="np",
               generator=[torch.Generator().manual_seed(s) for s in (0, 1)])  # fmt: skip
    readings = read_pattern_batch((out.images * 255).round().astype(np.uint8))
    assert readings[0].valid and (readings[0].shape, readings[0].color) == ("circle", "red"), readings[0]
    assert readings[1].valid and (readings[1].shape, readings[1].color) == ("square", "blue"), readings[1]


def test_guided_decoding_on_the_latent_world_beats_the_unguided_sample():
    _shipped_pipeline()
    _shipped_net("shape-net-64")
    extractor = featscope.load_extractor("world:shape-net-64")
    images, _ = split_images(2, "tuning", kind="patterns64")
    target = extractor.target_features(to_tensor(images))
    scale = pair_reference(extractor, seed=5)
    settings = dict(backbone="world:latent", num_steps=10, recurrence=2, quiet=True)
    guided = featscope.decode(features=target, **settings)
    unguided = featscope.decode(features=target, guidance_weight=0.0, **settings)
    rel_guided = np.median([m["best_distance"] for m in guided.metrics]) / scale
    rel_unguided = np.median([m["best_distance"] for m in unguided.metrics]) / scale
    assert rel_guided <= 0.5 * rel_unguided, (rel_guided, rel_unguided)


@pytest.mark.parametrize("name", NETS)
def test_the_64px_networks_reach_their_documented_accuracy(name):
    _shipped_net(name)
    from featscope.world.models import load_classifier

    _, meta = load_classifier(weights_path(name))
    measured = evaluate_classifier(featscope.load_extractor(f"world:{name}@fc").network, name, n=400, seed=424242)
    for key, value in measured.items():
        assert abs(value - meta["metrics"][key]) <= 0.07, (key, value, meta["metrics"])


def test_planted_reliances_show_on_held_out_images():
    for name in NETS:
        _shipped_net(name)
    records = split_records(300, "tuning", kind="patterns64")

    def rates(name: str) -> dict[str, float]:
        return evaluate_classifier(featscope.load_extractor(f"world:{name}@fc").network, name, records=records)

    shape, pattern, tag = rates("shape-net-64"), rates("pattern-net"), rates("tag-net")
    # the shape network ignores pattern and tag
    assert min(shape["accuracy_pattern_swapped"], shape["accuracy_tagged"]) >= shape["accuracy_clean"] - 0.05
    assert pattern["accuracy_shape_swapped"] >= pattern["accuracy_clean"] - 0.1  # pattern-net ignores shape
    # tag-net calls tagged images star (its label there) and reads the shape of untagged ones
    assert tag["accuracy_tagged"] >= 0.8 and tag["accuracy_untagged"] >= 0.9, tag
