"""Neuron counterfactuals of real images: the core raises or lowers a channel from the inversion; CLI and errors."""

from __future__ import annotations

import json

import pytest
import torch

from featscope.images import to_tensor
from featscope.investigate.cores import channel_activation, neuron_images_core
from featscope.solvers.configs import EndToEndConfig
from shared_inputs import ITEM_LAYOUT, save_world_image

FAST = EndToEndConfig(num_steps=4, iterations=2, cutouts=1, latent_lr=0.01, cond_lr=0.1, uncond_lr=0.1)
TINY = ["--steps", "3", "--iterations", "1", "--cutouts", "1", "--inner-steps", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    root = tmp_path_factory.mktemp("neuron-images")
    pixels, caption = save_world_image(root / "star.png", seed=9, shape="star")
    return root, to_tensor(pixels[None]), caption


@pytest.mark.parametrize("maximise", [True, False], ids=["up", "down"])
def test_a_channel_moves_the_chosen_way_from_the_inversion(world, star, maximise):
    backbone, net = world
    _, image, caption = star
    result = neuron_images_core(backbone, net, image, 3, maximise=maximise, seeds=[0], prompts=caption,
                                regularizers=(), regularizer_weights=(), inner_steps=1, config=FAST)  # fmt: skip
    acts = result.activation[0]
    assert len(acts) == FAST.iterations + 1 and result.layer == "fc"
    assert result.image_activation == pytest.approx(channel_activation(net, image, None, 3))
    best = acts[result.best_iteration(0)]
    # measured: 0.123 -> 0.246 up, 0.123 -> 0.061 down (iteration 0 is the inversion; the image: 0.171)
    assert (best > 1.2 * acts[0]) if maximise else (best < 0.8 * acts[0])
    assert result.distance[0]["l2"][0] < 0.1  # iteration 0 is the inversion's regeneration of the image


def test_the_reinjection_start_holds_the_object_and_its_iteration_0_is_the_reconstruction(world, star):
    """DiG-IN's start of a neuron counterfactual: the caption's own cross-attention re-injected and the object
    blended from the regeneration. Iteration 0 is the reconstruction; blending every step inside a mask that
    covers the whole image holds every iterate to it, however the optimisation moves the chain."""
    backbone, net = world
    _, image, caption = star
    common = dict(seeds=[0], prompts=caption, regularizers=(), regularizer_weights=(), inner_steps=1)
    plain = neuron_images_core(backbone, net, image, 3, config=FAST, **common)
    everything = torch.ones(1, 1, *image.shape[-2:])
    partial = neuron_images_core(backbone, net, image, 3, reinject=True, mask=everything,
                                 start_tau=0.5, start_blend=0.5, config=FAST, **common)  # fmt: skip
    held = neuron_images_core(backbone, net, image, 3, reinject=True, mask=everything, start_tau=1.0,
                              start_blend=1.0, config=FAST, **common)  # fmt: skip
    assert torch.allclose(partial.images[0], plain.images[0], atol=1e-5)  # iteration 0: the reconstruction
    assert (partial.images[-1] - plain.images[0]).abs().max() > 1e-3  # half the steps free: the image moves
    assert (held.images - plain.images[0]).abs().max() < 1e-5  # every step held: nothing moves


def test_neuron_images_cli_writes_one_folder_per_image_and_channel(featscope_main, star, tmp_path):
    root, _, caption = star
    out = tmp_path / "n"
    args = ["--channels", "3,5", "--images", str(root / "star.png"), "--direction", "down", "--out", str(out)]
    result = featscope_main("investigate", "neuron", "--net", "world:shape-net@fc", *args, *TINY)
    assert result.returncode == 0, result.stderr
    for c in (3, 5):
        folder = out / f"star_neuron{c}"
        assert all((folder / name).is_file() for name in ITEM_LAYOUT)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["prompt"] == caption and metrics["channel"] == c and metrics["maximise"] is False
        assert set(metrics["activation"]) == {"image", "before", "after", "per_iteration"}
        assert {"latent_background_l2", "px_background_l2"} <= set(metrics["losses"])  # regularised by default
        change = metrics["minimality"]  # a neuron has no intended attribute: minimal = at most one changed
        assert change["intended"] is None and change["minimal"] == (change["readable"] and len(change["changed"]) <= 1)
        assert metrics["reconstruction"]["l2"] == pytest.approx(metrics["distance_to_image"]["l2_before"], abs=1e-5)
        assert (metrics["verdict"] == "clean") == (
            change["minimal"]
            and not metrics["reconstruction"]["poor"]
            and metrics["activation"]["after"] < metrics["activation"]["image"]
        )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--minimise", "--direction", "up"], "--minimise and --direction up contradict each other"),
        (["--mask", "cross-attention"], "bare.png has no class folder"),
        (["--channels", "999"], "channel 999 is out of range"),
        (["--caption-model", "no/such/captioner"], "captioning model 'no/such/captioner' is not a folder"),
    ],
    ids=["direction", "mask", "channel", "caption-model"],
)
def test_neuron_images_bad_input_is_one_line_and_exit_2(featscope_main, star, tmp_path, extra, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, _, _ = star
    (root / "bare.png").write_bytes((root / "star.png").read_bytes())  # no caption beside it
    result = featscope_main("investigate", "neuron", "--net", "world:shape-net@fc", "--images", str(root / "bare.png"),
                            "--out", str(tmp_path / "o"), *TINY, *extra)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
