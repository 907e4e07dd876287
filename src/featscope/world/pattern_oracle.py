"""An analytic oracle for the patterned world (``world.patterns``): read an image's seven attributes back.

Tag: the median colour of the tag square, nearer the tag colour than the background (the median border
colour) means tagged; the corner is then painted with the background colour. The object is the largest
component of off-background pixels, as in the shapes-world oracle; its inner pixels (INSET px inside it,
where the pattern may lie) are each matched to the palette colours and their inks, and the commonest palette
colour is the object's. Inner pixels nearer that colour's ink than the colour itself are the pattern's; on
the core (one pixel further in, clear of the antialiased edge) they are compared with every pattern at every
phase of its grid, and the best agreement names the pattern. The inked
pixels are then painted the plain colour and the shapes-world oracle (``oracle.read_batch``, at 32 px) reads
the now solid scene: shape, colour, size, position, background, and whether it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from featscope.world.oracle import _PLANE, OBJECT_DISTANCE, OracleReading, _border, _components, _to_nhwc255, read_batch
from featscope.world.patterns import (
    ATTRIBUTES,
    CLEAR_FROM,
    IMAGE_SIZE,
    INSET,
    PATTERNS,
    PERIOD,
    TAG_BOX,
    TAG_RGB,
    TAGS,
    ink_colour,
    pattern_mask,
)
from featscope.world.render import COLORS

MIN_PATTERN_AGREEMENT = 0.8  # share of inner pixels the best pattern explains, less: no recognisable pattern

_COLOR_NAMES = tuple(COLORS)
_PLAIN = np.array([COLORS[c] for c in _COLOR_NAMES], np.float32)
_INKS = np.array([ink_colour(c) for c in _COLOR_NAMES], np.float32)


@dataclass(frozen=True)
class PatternReading(OracleReading):
    """The oracle's reading of one patterned-world image (the shapes oracle's, plus the pattern and the tag, and
    the scores pattern_agreement and tag_margin); attributes are None when it is not valid."""

    pattern: str | None = None
    tag: str | None = None

    def attributes(self) -> dict[str, str | None]:
        """The seven categorical attributes."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


@lru_cache(maxsize=1)
def _pattern_bank() -> np.ndarray:
    """Every pattern at every phase of its grid: (len(PATTERNS), PERIOD**2, 64*64) float32."""
    phases = [(x0, y0) for y0 in range(PERIOD) for x0 in range(PERIOD)]
    return np.stack([np.stack([pattern_mask(p, *a).ravel() for a in phases]) for p in PATTERNS]).astype(np.float32)


def _untag(x: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, how much nearer the tag square's median colour is to the tag colour than to the background
    (positive: tagged), and the images with their tag corner painted with the background."""
    start, stop = TAG_BOX
    box = np.median(x[:, start:stop, start:stop].reshape(len(x), -1, 3), axis=1)
    margin = np.linalg.norm(box - bg, axis=-1) - np.linalg.norm(box - np.array(TAG_RGB, np.float32), axis=-1)
    clean = x.copy()
    clean[:, CLEAR_FROM:, CLEAR_FROM:] = bg[:, None, None]
    return margin, clean


def _inner(x: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixels INSET px inside the largest off-background component, where the pattern may lie, and
    those one more pixel inside, where it must: (B, 64, 64) bool each (the component's edge is antialiased)."""
    smooth = ndimage.uniform_filter(x, size=(1, 3, 3, 1), mode="nearest")
    component, _ = _components(np.linalg.norm(smooth - bg[:, None, None], axis=-1) > OBJECT_DISTANCE)
    inner = ndimage.binary_erosion(component, structure=_PLANE, iterations=INSET)
    return inner, ndimage.binary_erosion(inner, structure=_PLANE)


def _colour_and_ink(x: np.ndarray, inner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The commonest palette colour among inner pixels (each matched to the colours and their inks), and the
    inner pixels nearer that colour's ink than the colour."""
    candidates = np.concatenate([_PLAIN, _INKS])
    squared = (candidates**2).sum(1) - 2 * x @ candidates.T  # + |x|^2, the same for every candidate
    nearest = squared.argmin(-1) % len(_PLAIN)
    votes = np.stack([(inner & (nearest == i)).sum((1, 2)) for i in range(len(_PLAIN))], 1)
    index = votes.argmax(1)
    plain, ink = _PLAIN[index][:, None, None], _INKS[index][:, None, None]
    inked = inner & (((x - ink) ** 2).sum(-1) < ((x - plain) ** 2).sum(-1))
    return index, inked


def _pattern(inked: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the pattern (index) whose best phase agrees with the inked pixels on most core pixels, and
    that share."""
    bank = _pattern_bank()
    on = (core & inked).reshape(len(core), -1).astype(np.float32)
    off = (core & ~inked).reshape(len(core), -1).astype(np.float32)
    agree = np.einsum("bn,pqn->bpq", on, bank) + np.einsum("bn,pqn->bpq", off, 1 - bank)
    share = agree.max(2) / np.maximum(core.sum((1, 2)), 1)[:, None]
    return share.argmax(1), share.max(1)


def read_pattern_batch(images) -> list[PatternReading]:
    """Read a batch: (B,3,H,W) float in [0,1] (tensor or array) or (B,H,W,3) uint8; other sizes are resized to 64."""
    x = _to_nhwc255(images, IMAGE_SIZE)
    bg = np.median(_border(x), axis=1)
    tag_margin, x = _untag(x, bg)
    inner, core = _inner(x, bg)
    colour_index, inked = _colour_and_ink(x, inner)
    pattern_index, agreement = _pattern(inked, core)
    solid = np.where(inked[..., None], _PLAIN[colour_index][:, None, None], x)
    readings = []
    for i, base in enumerate(read_batch(solid / 255.0)):
        scores = {**base.scores, "pattern_agreement": float(agreement[i]), "tag_margin": float(tag_margin[i])}
        reason = base.reason
        if not reason and not core[i].any():
            reason = "no object inside to read a pattern from"
        elif not reason and agreement[i] < MIN_PATTERN_AGREEMENT:
            reason = f"no recognisable pattern (best agreement {agreement[i]:.2f})"
        if reason:
            readings.append(PatternReading(False, reason, scores=scores))
            continue
        readings.append(
            PatternReading(
                True,
                **base.attributes(),
                pattern=PATTERNS[pattern_index[i]],
                tag=TAGS[int(tag_margin[i] > 0)],
                scores=scores,
            )
        )
    return readings


def read_pattern_attributes(image) -> PatternReading:
    """Read one image: (64,64,3) uint8, or float (3,H,W) / (H,W,3) in [0,1], tensor or array."""
    return read_pattern_batch(image[None])[0]
