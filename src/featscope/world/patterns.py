"""The patterned world at 64 px: the shapes world's scenes drawn at twice the size, with a surface pattern
on the object and, in a minority of images, a small mark (a "tag") in the bottom-right corner.

Geometry is the 32 px world's (``render.sample_record``: the same shape, colour, size, grid position,
background, jitter and rotation, in 32 px units) drawn at 64 px. The pattern darkens the object's colour
(``INK``) on a 4 px grid anchored at the object's centre, only on pixels whose 3x3 neighbourhood is fully
covered by the object, so the antialiased outline and the ring inside it keep the plain colour. The tag is
an orange 5x5 square; no object ever reaches its corner (records that would, large objects in the
bottom-right cell only, are redrawn with new jitter and rotation, whether tagged or not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from featscope.world.render import ATTRIBUTES as SHAPE_ATTRIBUTES
from featscope.world.render import COLORS, WorldRecord, object_mask, render, sample_record

IMAGE_SIZE = 64
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked")
TAGS: tuple[str, ...] = ("untagged", "tagged")
ATTRIBUTES: dict[str, tuple[str, ...]] = {**SHAPE_ATTRIBUTES, "pattern": PATTERNS, "tag": TAGS}
TAG_RATE = 0.15  # share of tagged images
TAG_RGB = (250, 140, 20)
TAG_BOX = (58, 63)  # first and last+1 pixel of the tag square, on both axes
CLEAR_FROM = 56  # objects keep out of [CLEAR_FROM, 64) x [CLEAR_FROM, 64)
INK = 0.5  # the pattern's colour: the object's colour times INK
PERIOD = 4  # pattern cell, pixels; each pattern element is PERIOD // 2 pixels wide
INSET = 1  # the pattern stays this many pixels inside the fully covered pixels
_CAPTION_ORDER = ("size", "color", "pattern", "shape", "position")


def caption_of(attributes: dict[str, str]) -> str:
    """Caption for any subset of attributes, in a fixed word order (the tag, named either way, last)."""
    words = [attributes[k] for k in _CAPTION_ORDER if k in attributes]
    if "background" in attributes:
        words += ["on", attributes["background"]]
    if "tag" in attributes:
        words.append(attributes["tag"])
    return " ".join(words)


@dataclass(frozen=True)
class PatternRecord(WorldRecord):
    """A patterned-world image: the shapes world's record (32 px units) with a pattern and a tag; its caption names
    every attribute, e.g. ``small red striped star top-left on dark tagged``."""

    pattern: str
    tag: str

    attribute_names: ClassVar[tuple[str, ...]] = tuple(ATTRIBUTES)
    words = staticmethod(caption_of)


def sample_pattern_record(rng: np.random.Generator, tag_rate: float = TAG_RATE, **fixed: str) -> PatternRecord:
    """Draw one record; any attribute may be fixed by keyword (``pattern="dotted"``, ``tag="tagged"``)."""
    for name, value in fixed.items():
        if name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
            raise ValueError(f"unknown patterned-world attribute {name}={value!r}")
    shape_fixed = {k: v for k, v in fixed.items() if k in SHAPE_ATTRIBUTES}
    base = sample_record(rng, **shape_fixed)
    pattern = fixed.get("pattern") or str(rng.choice(PATTERNS))
    tagged = rng.random() < tag_rate
    while _reaches_corner(base):
        base = sample_record(rng, **base.attributes())
    return PatternRecord(**base.to_dict(), pattern=pattern, tag=fixed.get("tag") or TAGS[int(tagged)])


def _reaches_corner(record: WorldRecord) -> bool:
    reach = 2 * 1.2 * record.radius  # at 64 px; every shape lies within 1.2 radii of its centre (a square: 1.13)
    if 2 * record.cx + reach < CLEAR_FROM or 2 * record.cy + reach < CLEAR_FROM:
        return False
    return bool(object_mask(record, IMAGE_SIZE)[CLEAR_FROM:, CLEAR_FROM:].any())


def pattern_mask(pattern: str, x0: int, y0: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """Where ``pattern`` inks a (size, size) image when its grid is anchored at pixel (x0, y0)."""
    ys, xs = np.indices((size, size))
    col, row = ((xs - x0) // (PERIOD // 2)) % 2 == 0, ((ys - y0) // (PERIOD // 2)) % 2 == 0
    masks = {"solid": np.zeros((size, size), bool), "striped": row, "dotted": row & col, "checked": row == col}
    return masks[pattern]


def ink_colour(color: str) -> np.ndarray:
    """The pattern's RGB colour on an object of ``color``."""
    return np.rint(np.array(COLORS[color], np.float32) * INK).astype(np.uint8)


def render_pattern(record: PatternRecord) -> np.ndarray:
    """Draw a record as a (64, 64, 3) uint8 array."""
    image = render(record, IMAGE_SIZE).copy()
    inside = ndimage.binary_erosion(object_mask(record, IMAGE_SIZE) >= 1.0, np.ones((3, 3), bool), INSET)
    anchor = int(np.floor(record.cx * 2)) - 1, int(np.floor(record.cy * 2)) - 1
    image[inside & pattern_mask(record.pattern, *anchor)] = ink_colour(record.color)
    if record.tag == "tagged":
        start, stop = TAG_BOX
        image[start:stop, start:stop] = TAG_RGB
    return image
