"""The shapes world: generator, analytic oracle and sampling to disk."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.errors import FeatscopeError
from featscope.world.oracle import OracleReading, agreement, read_attributes, read_batch
from featscope.world.render import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    COLS,
    ROWS,
    SIZES,
    WorldRecord,
    caption_of,
    generate,
    render,
)
from featscope.world.sample import write_samples

FRESH_SEED = 90210  # never used while tuning the oracle's thresholds
FRESH_N = 2000


@pytest.fixture(scope="module")
def fresh() -> tuple[np.ndarray, list[WorldRecord]]:
    return generate(FRESH_N, FRESH_SEED)


def accuracy(readings: list[OracleReading], records: list[WorldRecord]) -> dict[str, float]:
    """Share of images whose reading agrees with the record, per attribute."""
    hits = [agreement(record.attributes(), reading) for reading, record in zip(readings, records, strict=True)]
    return {name: float(np.mean([h[name] for h in hits])) for name in ATTRIBUTES}


def record(**overrides) -> WorldRecord:
    values = dict(shape="circle", color="red", size="large", position="middle-center", background="dark")
    values |= dict(cx=16.0, cy=16.0, radius=9.0, angle=0.0)
    return WorldRecord(**(values | overrides))


# generator


def test_generate_is_deterministic_per_seed():
    images, records = generate(40, seed=3)
    again, records_again = generate(40, seed=3)
    other, records_other = generate(40, seed=4)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and records == records_again
    assert not np.array_equal(images, other) and records != records_other


def test_fixed_attributes_and_unknown_ones():
    _, records = generate(30, seed=0, shape="star", background="light")
    assert {r.shape for r in records} == {"star"} and {r.background for r in records} == {"light"}
    with pytest.raises(ValueError):
        generate(1, seed=0, shape="hexagon")


def test_attribute_frequencies_are_roughly_uniform(fresh):
    _, records = fresh
    for name, values in ATTRIBUTES.items():
        counts = Counter(getattr(r, name) for r in records)
        assert set(counts) == set(values)
        assert all(abs(counts[v] / len(records) - 1 / len(values)) < 0.04 for v in values), (name, counts)


def test_continuous_values_stay_within_their_jitter(fresh):
    _, records = fresh
    for r in records:
        row, col = r.position.split("-")
        assert abs(r.cx - COLS[col]) <= 1.0 and abs(r.cy - ROWS[row]) <= 1.0
        assert abs(r.angle) <= 15.0 and r.radius == SIZES[r.size]


def test_caption_format():
    r = record(shape="star", color="blue", size="small", position="top-left", background="grey")
    assert r.caption() == "small blue star top-left on grey"
    assert caption_of({"shape": "star", "background": "light"}) == "star on light"
    assert caption_of({"position": "bottom-right", "color": "cyan"}) == "cyan bottom-right"


# oracle


def test_oracle_reads_fresh_images(fresh):
    images, records = fresh
    readings = read_batch(images)
    assert np.mean([r.valid for r in readings]) >= 0.995
    per_attribute = accuracy(readings, records)
    assert all(value >= 0.98 for value in per_attribute.values()), per_attribute


def noise_and_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise (sd 0.03) and a per-image colour shift of up to +-0.05 per channel."""
    shift = (torch.rand(len(x), 3, 1, 1, generator=generator) - 0.5) * 0.1
    return x + shift + 0.03 * torch.randn(x.shape, generator=generator)


def blur(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 3x3 binomial blur, like a soft decoder."""
    kernel = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = (kernel[:, None] * kernel[None]).expand(3, 1, 3, 3)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)


@pytest.mark.parametrize("perturb", [noise_and_shift, blur])
def test_oracle_tolerates_noise_shifts_and_blur(fresh, perturb):
    images, records = fresh
    x = torch.from_numpy(images[:1000]).permute(0, 3, 1, 2).float() / 255
    readings = read_batch(perturb(x, torch.Generator().manual_seed(0)).clamp(0, 1))
    assert np.mean([r.valid for r in readings]) >= 0.98
    assert all(value >= 0.98 for value in accuracy(readings, records[:1000]).values())


def test_oracle_accepts_every_image_layout(fresh):
    image = fresh[0][0]
    chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    upscaled = torch.nn.functional.interpolate(chw[None], size=64, mode="nearest")[0]
    readings = [read_attributes(image), read_attributes(image / 255.0), read_attributes(chw), read_attributes(upscaled)]
    assert readings[0].valid and all(r.attributes() == readings[0].attributes() for r in readings)
    assert read_batch(np.zeros((0, 32, 32, 3), np.uint8)) == []


def test_agreement_per_attribute():
    reading = read_attributes(render(record()))
    assert reading.valid and reading.attributes() == record().attributes()
    target = {"shape": "circle", "color": "blue", "cx": 16.0}
    assert agreement(target, reading) == {"shape": True, "color": False}
    invalid = OracleReading(False, "no object")
    assert agreement({"shape": "circle"}, invalid) == {"shape": False}


def two_objects() -> np.ndarray:
    image = render(record(shape="square", cx=10.0, cy=10.0, position="top-left")).copy()
    second = render(record(shape="triangle", color="cyan", cx=22.0, cy=22.0, position="bottom-right"))
    other = np.any(second != BACKGROUNDS["dark"], axis=-1)
    image[other] = second[other]
    return image


def off_palette() -> np.ndarray:
    image = render(record()).copy()
    image[np.all(image == COLORS["red"], axis=-1)] = (130, 90, 160)
    return image


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8),
        lambda: np.clip(np.random.default_rng(1).normal(125, 60, (32, 32, 3)), 0, 255).astype(np.uint8),
        lambda: np.full((32, 32, 3), BACKGROUNDS["grey"], np.uint8),
        two_objects,
        off_palette,
        lambda: np.full((32, 32, 3), (200, 120, 60), np.uint8),
    ],
    ids=["uniform-noise", "gaussian-noise", "blank", "two-objects", "off-palette-colour", "off-palette-background"],
)
def test_oracle_refuses_images_without_one_clear_object(make):
    reading = read_attributes(make())
    assert not reading.valid and reading.reason
    assert all(value is None for value in reading.attributes().values())


# sampling to disk


def test_write_samples_writes_images_and_records(tmp_path):
    out = tmp_path / "world"
    paths = write_samples(5, out, seed=7, shape="cross")
    images, records = generate(5, 7, shape="cross")
    assert [p.name for p in paths] == [f"world_{i:05d}.png" for i in range(5)]
    lines = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    for path, image, r, line in zip(paths, images, records, lines, strict=True):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)
        assert line == {"file": path.name, **r.to_dict(), "caption": r.caption()}
    assert not list(out.glob(".*.tmp"))


def test_write_samples_refuses_to_overwrite_unless_asked(tmp_path):
    write_samples(4, tmp_path, seed=1)
    with pytest.raises(FeatscopeError, match="overwrite"):
        write_samples(2, tmp_path, seed=2)
    paths = write_samples(2, tmp_path, seed=2, overwrite=True)
    assert sorted(tmp_path.glob("world_*.png")) == paths
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2


def test_write_samples_refuses_unknown_attributes(tmp_path):
    with pytest.raises(FeatscopeError, match="circle"):
        write_samples(1, tmp_path, shape="circel")
    with pytest.raises(FeatscopeError, match="did you mean shape"):
        write_samples(1, tmp_path, shapes="circle")
