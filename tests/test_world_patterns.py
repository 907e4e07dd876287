"""The patterned world at 64 px: generator, captions, oracle, splits and sampling to disk."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.cli import main
from featscope.errors import FeatscopeError
from featscope.world import render
from featscope.world.kinds import KINDS, scene_kind
from featscope.world.oracle import read_batch
from featscope.world.pattern_oracle import read_pattern_attributes, read_pattern_batch
from featscope.world.patterns import (
    ATTRIBUTES,
    CLEAR_FROM,
    IMAGE_SIZE,
    PATTERNS,
    TAG_RATE,
    PatternRecord,
    caption_of,
    render_pattern,
    sample_pattern_record,
)
from featscope.world.sample import write_samples
from featscope.world.splits import (
    LATENT_POOL,
    SPLIT_STREAM,
    SPLITS,
    records,
    split_images,
    split_records,
    training_clashes,
)

FRESH_SEED = 31337  # never used while choosing the oracle's thresholds
FRESH_N = 400
PATTERNS64 = KINDS["patterns64"]


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, list[PatternRecord]]:
    return PATTERNS64.generate(FRESH_N, FRESH_SEED)


def record(**overrides) -> PatternRecord:
    values = dict(shape="square", color="red", size="large", position="middle-center", background="dark")
    values |= dict(cx=16.0, cy=16.0, radius=9.0, angle=5.0, pattern="striped", tag="untagged")
    return PatternRecord(**(values | overrides))


def test_generate_is_deterministic_and_draws_every_value(fresh):
    images, records = fresh
    again, records_again = PATTERNS64.generate(FRESH_N, FRESH_SEED)
    assert images.shape == (FRESH_N, IMAGE_SIZE, IMAGE_SIZE, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and records == records_again
    for name, values in ATTRIBUTES.items():
        assert {getattr(r, name) for r in records} == set(values), name
    tagged = np.mean([r.tag == "tagged" for r in records])
    assert abs(tagged - TAG_RATE) < 0.05  # a minority: 15% of images, binomial sd 1.8 points at 400
    pattern_counts = [sum(r.pattern == p for r in records) for p in PATTERNS]
    assert min(pattern_counts) > FRESH_N / len(PATTERNS) * 0.7


def test_shapes32_kind_is_the_shapes_world_unchanged():
    images, records = KINDS["shapes32"].generate(20, 5, shape="star")
    expected, expected_records = render.generate(20, 5, shape="star")
    assert np.array_equal(images, expected) and records == expected_records
    assert split_records(5, "test") == split_records(5, "test", kind="shapes32")


def test_scenes_are_the_shapes_world_drawn_at_64_px():
    """A solid, untagged scene is the shapes world's scene at twice the size: halved, it is the 32 px image (up to
    antialiasing, at 8x instead of 4x) and the shapes-world oracle reads it alike."""
    rng = np.random.default_rng(4)
    drawn = [sample_pattern_record(rng, pattern="solid", tag="untagged") for _ in range(20)]
    images = torch.from_numpy(np.stack([render_pattern(r) for r in drawn])).permute(0, 3, 1, 2).float()
    halved = torch.nn.functional.avg_pool2d(images, 2).permute(0, 2, 3, 1).numpy()
    expected = np.stack([render.render(r) for r in drawn])
    assert np.abs(halved - expected).mean() < 0.5
    readings = read_batch(np.rint(halved).astype(np.uint8))
    shapes_world = list(render.ATTRIBUTES)  # the five attributes of the shapes world
    assert [g.attributes() for g in readings] == [{k: r.attributes()[k] for k in shapes_world} for r in drawn]


def test_no_object_reaches_the_tag_corner_and_fixed_values_hold():
    rng = np.random.default_rng(0)
    drawn = [sample_pattern_record(rng, position="bottom-right", size="large", tag="tagged") for _ in range(200)]
    assert all(r.tag == "tagged" and r.position == "bottom-right" for r in drawn)
    assert all(not render.object_mask(r, IMAGE_SIZE)[CLEAR_FROM:, CLEAR_FROM:].any() for r in drawn)
    assert max(r.cx + r.cy for r in drawn) > 44.5  # the redraw keeps the cell's jitter, not just its centre
    with pytest.raises(ValueError, match="pattern"):
        sample_pattern_record(rng, pattern="plaid")


def test_captions_name_every_attribute_the_tag_included():
    assert record().caption() == "large red striped square middle-center on dark untagged"
    assert record(tag="tagged", pattern="dotted").caption() == "large red dotted square middle-center on dark tagged"
    assert caption_of({"pattern": "checked", "shape": "star", "tag": "tagged"}) == "checked star tagged"
    assert PATTERNS64.caption_of({"color": "blue"}) == "blue"


# oracle


def test_oracle_reads_every_attribute_of_fresh_images(fresh):
    images, records = fresh
    readings = read_pattern_batch(images)
    assert np.mean([r.valid for r in readings]) >= 0.99, [r.reason for r in readings if not r.valid][:5]
    rates = {
        name: np.mean([getattr(g, name) == getattr(r, name) for g, r in zip(readings, records, strict=True)])
        for name in ATTRIBUTES
    }
    assert all(rate >= 0.99 for rate in rates.values()), rates


def test_oracle_tolerates_noise_and_colour_shifts(fresh):
    images, records = fresh
    x = torch.from_numpy(images[:200]).permute(0, 3, 1, 2).float() / 255
    generator = torch.Generator().manual_seed(0)
    shift = (torch.rand(len(x), 3, 1, 1, generator=generator) - 0.5) * 0.1
    readings = read_pattern_batch((x + shift + 0.03 * torch.randn(x.shape, generator=generator)).clamp(0, 1))
    assert np.mean([g.attributes() == r.attributes() for g, r in zip(readings, records[:200], strict=True)]) >= 0.98


def test_oracle_tells_each_pattern_and_the_tag_apart_on_one_object():
    for pattern in PATTERNS:
        for tag in ("untagged", "tagged"):
            r = record(pattern=pattern, tag=tag, size="small", radius=5.5, background="light", color="yellow")
            reading = read_pattern_attributes(render_pattern(r))
            assert reading.valid and reading.attributes() == r.attributes(), (pattern, tag, reading)


def test_oracle_accepts_float_tensors_and_other_sizes():
    image = render_pattern(record(pattern="checked", tag="tagged"))
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    upscaled = torch.nn.functional.interpolate(chw[None], size=128, mode="nearest")[0]
    readings = [read_pattern_attributes(x) for x in (image, chw, upscaled)]
    assert readings[0].valid and all(r.attributes() == readings[0].attributes() for r in readings)


def test_oracle_refuses_blank_images_and_unreadable_patterns():
    blank = np.full((64, 64, 3), 125, np.uint8)
    assert read_pattern_attributes(blank).reason == "no object"
    r = record(pattern="solid")
    image = render_pattern(r)
    inside = render.object_mask(r, IMAGE_SIZE) >= 1
    speckle = inside & (np.random.default_rng(0).random(inside.shape) < 0.3)
    image[speckle] = (110, 20, 20)  # red's ink, scattered at random: no pattern's grid
    reading = read_pattern_attributes(image)
    assert not reading.valid and "no recognisable pattern" in reading.reason


# splits and sampling to disk


def test_patterned_splits_come_from_the_split_seeds():
    test, tuning = split_records(6, "test", kind="patterns64"), split_records(6, "tuning", kind="patterns64")
    assert all(isinstance(r, PatternRecord) for r in test) and test != tuning
    assert test == PATTERNS64.generate(6, 8_000_000)[1]
    images, dotted = split_images(3, "test", kind="patterns64", pattern="dotted")
    assert images.shape == (3, 64, 64, 3) and all(r.pattern == "dotted" for r in dotted)
    with pytest.raises(FeatscopeError, match="unknown world kind 'patterns'; did you mean patterns64"):
        scene_kind("patterns")


def test_patterned_test_split_skips_the_latent_recipe_pools_image():
    """The test stream's image 263 is pool image 2985 of the latent world's recipe pool (seed 0) pixel for pixel
    (``training_clashes`` over the whole pool finds only that one); the split skips it."""
    stream = records(SPLIT_STREAM, SPLITS["test"], "patterns64")
    pool_image = records(2986, LATENT_POOL[1], "patterns64")[2985]
    assert np.array_equal(PATTERNS64.render(pool_image), PATTERNS64.render(stream[263]))
    assert training_clashes(stream[260:266], {"latent": [pool_image]}, kind="patterns64") == {3: "latent"}
    split = split_records(SPLIT_STREAM - 1, "test", kind="patterns64")
    assert split == stream[:263] + stream[264:]


def test_world_sample_writes_patterned_scenes(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["world", "sample", "--kind", "patterns64", "-n", "3", "--pattern", "dotted", "--out", str(out)]) == 0
    images, records = PATTERNS64.generate(3, 0, pattern="dotted")
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    for i, (image, r, line) in enumerate(zip(images, records, lines, strict=True)):
        assert np.array_equal(np.asarray(Image.open(out / f"world_{i:05d}.png").convert("RGB")), image)
        assert line == {"file": f"world_{i:05d}.png", **r.to_dict(), "caption": r.caption()}
    with pytest.raises(FeatscopeError, match="unknown world attribute 'pattern'"):
        write_samples(1, tmp_path / "plain", pattern="dotted")  # the 32 px world has no pattern


def test_patterned_scene_differs_from_its_solid_twin_only_inside_and_in_the_corner():
    r = record(pattern="checked", tag="tagged")
    diff = np.abs(render_pattern(r).astype(int) - render_pattern(replace(r, pattern="solid", tag="untagged"))).sum(-1)
    inside = render.object_mask(r, IMAGE_SIZE) >= 1
    corner = np.zeros_like(inside)
    corner[CLEAR_FROM:, CLEAR_FROM:] = True
    assert diff[~inside & ~corner].max() == 0 and diff[inside].max() > 0 and diff[corner].max() > 0
