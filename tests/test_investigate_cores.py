"""The investigation cores: loaded models and tensors in, results out; a sample's result does not depend on
the batch it runs in (the CLI runs batches of one, the bench batches of eight)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featscope.backbones import load_backbone
from featscope.extractors import load_extractor
from featscope.images import to_tensor
from featscope.investigate import Ranks, cores, difference
from featscope.solvers.configs import EndToEndConfig
from featscope.world.render import generate, object_mask

CONFIG = EndToEndConfig(num_steps=3, iterations=1, cutouts=1)


@pytest.fixture(scope="module")
def models():
    device = torch.device("cpu")
    return load_backbone("world:ddpm", device=device), load_extractor("world:shape-net@fc", device=device)


def _same(batched, alone, b: int) -> None:
    """Sample ``b`` of a batched result against the same sample run alone: equal up to the float noise of
    batched convolutions (below 1e-6 on the plain sample), which Adam's first step, a normalised gradient,
    turns into at most a few 1e-4 on a pixel of the next iterate (1e-5 on average)."""
    torch.testing.assert_close(batched.images[0, b], alone.images[0, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.images[:, b], alone.images[:, 0], atol=2e-3, rtol=0)
    assert float((batched.images[:, b] - alone.images[:, 0]).abs().mean()) < 1e-4
    assert batched.best_iteration(b) == alone.best_iteration(0)
    for name, curve in batched.loss_curves(b).items():
        assert curve == pytest.approx(alone.loss_curves(0)[name], abs=1e-3)


def test_difference_and_neuron_give_a_sample_the_same_result_in_a_batch_as_alone(models):
    backbone, net = models
    spurious = load_extractor("world:spurious-net@fc", device=torch.device("cpu"))
    batched = cores.difference(backbone, net, spurious, "circle", seeds=[7, 8], prompt="circle", config=CONFIG)
    alone = cores.difference(backbone, net, spurious, "circle", seeds=[8], prompt="circle", config=CONFIG)
    assert batched.images.shape[:2] == (2, 2) and len(batched.confidence1) == 2
    _same(batched, alone, 1)
    assert batched.confidence1[1] == pytest.approx(alone.confidence1[0], abs=1e-3)
    assert batched.confidence2[1] == pytest.approx(alone.confidence2[0], abs=1e-3)
    assert torch.equal(batched.final, batched.images[-1])

    batched = cores.neuron(backbone, net, 3, seeds=[5, 6], config=CONFIG)
    alone = cores.neuron(backbone, net, 3, seeds=[6], config=CONFIG)
    _same(batched, alone, 1)
    assert batched.activation[1] == pytest.approx(alone.activation[0], abs=1e-3)
    assert batched.layer == "fc" and [t[0] for t in batched.top_class[1]] == [t[0] for t in alone.top_class[0]]


def test_counterfactual_and_inversion_give_a_sample_the_same_result_in_a_batch_as_alone(models):
    backbone, net = models
    arrays, records = generate(2, 11, shape="square")
    images, captions = to_tensor(arrays), [r.caption() for r in records]
    masks = torch.from_numpy(np.stack([object_mask(r) for r in records]))[:, None]
    common = {"config": CONFIG, "inner_steps": 2}
    batched = cores.counterfactual(backbone, net, images, "square", "circle", seeds=[3, 4], prompts=captions,
                                   mask=masks, **common)  # fmt: skip
    alone = cores.counterfactual(backbone, net, images[1:], "square", "circle", seeds=[4], prompts=captions[1:],
                                 mask=masks[1:], **common)  # fmt: skip
    _same(batched, alone, 1)
    assert {"total", "latent_background_l2", "px_background_l2"} <= set(batched.loss_curves(0))
    assert len(batched.start_confidence[1]) == 1 + 2  # the image, then every iterate
    assert batched.target_confidence[1] == pytest.approx(alone.target_confidence[0], abs=1e-3)
    assert batched.distance[1]["l2"] == pytest.approx(alone.distance[0]["l2"], abs=1e-3)

    batched = cores.invert(backbone, images, captions, num_steps=3, inner_steps=2)
    alone = cores.invert(backbone, images[1:], captions[1:], num_steps=3, inner_steps=2)
    assert batched.null_texts.shape[:2] == (3, 2) and batched.reconstruction.shape == images.shape
    torch.testing.assert_close(batched.reconstruction[1:], alone.reconstruction, atol=1e-5, rtol=0)
    assert batched.latent_mse[1] == pytest.approx(alone.latent_mse[0], abs=1e-6)


def test_a_method_given_ranks_runs_every_item_here_whatever_torchrun_says(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # without ranks=, this process would join a group of two
    summary = difference("world:shape-net@fc", "world:spurious-net@fc", ["circle", "square"], out=tmp_path,
                         config=CONFIG, ranks=Ranks(), device="cpu", quiet=True)  # fmt: skip
    assert summary["done"] == 2 and summary["config"]["settings"]["num_steps"] == 3
