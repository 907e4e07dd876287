"""The evaluation splits share no image with any pool a shipped model trained on."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from featscope.errors import FeatscopeError
from featscope.world.render import generate, render
from featscope.world.splits import (
    EXCLUDED,
    SPLIT_STREAM,
    SPLITS,
    records,
    split_images,
    split_records,
    training_clashes,
    training_pools,
)


def test_records_are_those_of_generate_and_split_images_skip_the_excluded():
    images, drawn = generate(8, SPLITS["test"])
    assert records(8, SPLITS["test"]) == drawn
    assert np.array_equal(np.stack([render(r) for r in drawn]), images)
    stream = records(SPLIT_STREAM, SPLITS["test"])
    kept = split_records(SPLIT_STREAM - len(EXCLUDED["test"]), "test")
    assert [r for i, r in enumerate(stream) if i not in EXCLUDED["test"]] == kept
    images, first = split_images(4, "tuning")
    assert first == split_records(4, "tuning") and images.shape == (4, 32, 32, 3)
    with pytest.raises(FeatscopeError, match="the test split holds 1017 images"):
        split_records(2000, "test")
    _, circles = split_images(3, "test", shape="circle")
    assert circles == [r for r in kept if r.shape == "circle"][:3]
    with pytest.raises(FeatscopeError, match=r"the test split holds 218 images with shape=circle, not 500"):
        split_images(500, "test", shape="circle")


def test_evaluation_splits_share_no_image_with_any_training_pool():
    """Every pool record that could draw a split image (same attributes, nearly the same place and angle) is
    drawn and compared pixel for pixel: the clashes are exactly the excluded indices."""
    streams = {split: records(SPLIT_STREAM, seed) for split, seed in SPLITS.items()}
    pool_start = records(32, 0)
    pools = dict(training_pools())
    clashes = training_clashes(streams["tuning"] + streams["test"] + pool_start, pools)
    assert sorted(i for i in clashes if i < SPLIT_STREAM) == list(EXCLUDED["tuning"])
    assert sorted(i - SPLIT_STREAM for i in clashes if SPLIT_STREAM <= i < 2 * SPLIT_STREAM) == list(EXCLUDED["test"])
    assert [clashes.get(2 * SPLIT_STREAM + i) for i in range(32)] == ["world:ddpm"] * 32  # seed 0 is the pool
    tuning, test = (split_records(SPLIT_STREAM - len(EXCLUDED[s]), s) for s in SPLITS)
    digests = {hashlib.sha1(render(r).tobytes()).hexdigest() for r in tuning + test}
    assert len(digests) == len(tuning) + len(test)  # the two splits share no image either
    assert {model: len(pool) for model, pool in pools.items()} == {
        "world:ddpm": 30_000,
        "featinv-shape-net": 20_000,
        "world:shape-net": 3000 * 64,
        "world:color-net": 500 * 64,
        "world:spurious-net": 300 * 64,
    }
