"""FeatInv's evaluation metrics against values computed by hand on inputs whose answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from featscope import featinv
from featscope.bench.featinv import _row
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor, load_extractor
from featscope.featinv.metrics import compare, pooled_cosine, position_cosine, ssim
from featscope.featinv.world import embedded_folder
from featscope.images import to_tensor
from featscope.world.render import COLORS, render
from featscope.world.splits import split_images


def colour_net() -> Extractor:
    """Feature map = the image itself (layer ``image``); logits = the mean of each channel (classes r, g, b)."""
    network = nn.Sequential()
    network.add_module("image", nn.Identity())
    network.add_module("pool", nn.AdaptiveAvgPool2d(1))
    network.add_module("flat", nn.Flatten())
    return Extractor(network, name="colour-net", layer="image", mean=(0, 0, 0), std=(1, 1, 1), labels=("r", "g", "b"))


def flat(rgb: tuple[float, float, float], size: int = 3) -> torch.Tensor:
    """One (1, 3, size, size) image of a single colour."""
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def scores(originals: torch.Tensor, reconstructions: torch.Tensor) -> dict:
    metrics, notes = compare(colour_net(), "nchw", originals, originals, reconstructions)
    assert any("only 3 classes" in note for note in notes) and metrics["top5_agreement"] is None
    return metrics


def test_identical_images_score_perfectly():
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    m = scores(images, images.clone())
    assert m["cosine_median"] == pytest.approx([1, 1], abs=1e-6)
    assert m["cosine_pooled"] == pytest.approx([1, 1], abs=1e-6)
    assert m["mse"] == [0.0, 0.0] and m["ssim"] == pytest.approx([1, 1], abs=1e-6)
    assert m["top1_agreement"] == [1.0, 1.0]


def test_orthogonal_features_have_cosine_zero_and_a_hand_computed_mse():
    red, green = flat((1, 0, 0)), flat((0, 1, 0))
    m = scores(red, green)
    assert m["cosine_median"] == [0.0] and m["cosine_pooled"] == [0.0]
    assert m["mse"] == pytest.approx([2 / 3])  # two of three channels differ by 1 at every pixel
    assert m["top1_agreement"] == [0.0]  # the dominant channel (the predicted class) changed


def test_scaled_features_keep_cosine_one_and_pay_in_mse():
    original = flat((0.2, 0.3, 0.1))
    m = scores(original, 2 * original)
    assert m["cosine_median"] == pytest.approx([1], abs=1e-6) and m["cosine_pooled"] == pytest.approx([1], abs=1e-6)
    assert m["mse"] == pytest.approx([(0.2**2 + 0.3**2 + 0.1**2) / 3])  # (2x - x)^2 averaged over channels
    assert m["top1_agreement"] == [1.0]


def test_cosine_median_is_the_median_over_positions_and_pooled_is_of_the_mean_map():
    a = flat((1, 0, 0)).repeat(1, 1, 1, 3)  # 3x9: nine positions, nine positions of pure red
    b = a.clone()
    b[..., :5] = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)  # 5 of 9 positions turn green: cosine 0 there
    assert a.shape == (1, 3, 3, 9)
    assert position_cosine(a, b).tolist() == [0.0]  # 15 positions at 0, 12 at 1: the median is 0
    # pooled: mean of a = (1, 0, 0); mean of b = (12/27, 15/27, 0) -> cosine 12 / sqrt(12^2 + 15^2)
    assert pooled_cosine(a, b).item() == pytest.approx(12 / np.hypot(12, 15))
    b[..., :3] = a[..., :3]  # now 3 of 9 columns green: 9 positions at 0, 18 at 1
    assert position_cosine(a, b).tolist() == [1.0]


def test_ssim_of_a_constant_offset_matches_the_formula():
    # constant images: variances and covariance are 0, so SSIM = (2 mu_a mu_b + c1) / (mu_a^2 + mu_b^2 + c1)
    a, b = flat((0.5, 0.5, 0.5), 16), flat((0.7, 0.7, 0.7), 16)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.7 + c1) / (0.5**2 + 0.7**2 + c1)
    # float32 cancellation in E[b^2] - E[b]^2 leaves a variance of -4e-7 (against c2 = 9e-4): 4e-4 relative
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-3)
    assert ssim(a, 1 - a).item() == pytest.approx(1, abs=1e-6)  # 0.5 and 1 - 0.5: the same image


# -- the oracle's agreement, as `featscope bench featinv` scores reconstructions ------------------
@pytest.fixture(scope="module")
def targets():
    """Six test-split world images, every one read correctly by the oracle (checked in the tests)."""
    return split_images(6, "test")


def test_featinv_rows_score_the_targets_themselves_as_fully_kept(targets):
    arrays, records = targets
    images = to_tensor(arrays)
    net = load_extractor("world:shape-net")
    with torch.no_grad():
        features = net(images)
    row = _row("same", images, features, records, net, seconds=1.0, evals=1)
    assert row["valid"]["successes"] == 6
    assert {a: e["successes"] for a, e in row["agreement"].items()} == dict.fromkeys(row["agreement"], 6)
    assert row["feature_cosine_mean"] == pytest.approx(1, abs=1e-6)


def test_featinv_rows_see_a_colour_that_was_not_kept(targets):
    arrays, records = targets
    recoloured = [
        dataclasses.replace(r, color=next(c for c in COLORS if c != r.color and c != r.background)) for r in records
    ]
    images = to_tensor(np.stack([render(r) for r in recoloured]))
    net = load_extractor("world:shape-net")
    with torch.no_grad():
        features = net(to_tensor(arrays))
    row = _row("recoloured", images, features, records, net, seconds=2.0, evals=1)
    agreement = {a: e["successes"] for a, e in row["agreement"].items()}
    assert agreement == {"shape": 6, "color": 0, "size": 6, "position": 6, "background": 6}
    assert row["agreement"]["color"]["high"] < 0.5  # the Wilson interval of 0 / 6
    assert row["seconds_per_image"] == pytest.approx(2 / 6)


def test_evaluating_images_with_nan_is_a_one_line_error():
    model = featinv.load_model(embedded_folder())
    images = torch.rand(2, 3, 32, 32)
    images[1, 0, 3, 3] = float("nan")
    with pytest.raises(FeatscopeError, match="images to evaluate hold NaN or infinite values"):
        featinv.evaluate(model, images)
    with pytest.raises(FeatscopeError, match="reconstructions to evaluate hold NaN"):
        featinv.evaluate(model, images[:1], reconstructions=images.flip(0)[:1] * float("inf"))
