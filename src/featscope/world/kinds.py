"""The world's scene kinds: ``shapes32`` (the shapes world every shipped model trained on) and ``patterns64``
(the same scenes at 64 px with a surface pattern and a corner tag, ``world.patterns``).

A kind bundles how to draw a record, render it, caption it and read it back, so that splits, sampling to
disk and the CLI take a ``kind`` and otherwise work alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from featscope.errors import FeatscopeError, suggest
from featscope.world import oracle, pattern_oracle, patterns, render

DEFAULT_KIND = "shapes32"


@dataclass(frozen=True)
class SceneKind:
    """One family of world scenes."""

    name: str
    image_size: int
    attributes: dict[str, tuple[str, ...]]
    sample: Callable[..., render.WorldRecord]  # (rng, **fixed attributes) -> record
    render: Callable[[render.WorldRecord], np.ndarray]  # record -> (size, size, 3) uint8
    read_batch: Callable[..., list]  # images -> one reading per image
    caption_of: Callable[[dict[str, str]], str]  # any subset of attributes -> caption
    skewed: dict[str, dict[str, float]] = field(default_factory=dict)  # attributes the generator draws unevenly

    def frequencies(self, attribute: str) -> dict[str, float]:
        """How often the generator draws each value of ``attribute``."""
        values = self.attributes[attribute]
        return self.skewed.get(attribute) or {v: 1 / len(values) for v in values}

    def generate(self, n: int, seed: int, **fixed: str) -> tuple[np.ndarray, list[render.WorldRecord]]:
        """``n`` images (n, size, size, 3) uint8 and their records, deterministic for a seed."""
        rng = np.random.default_rng(seed)
        records = [self.sample(rng, **fixed) for _ in range(n)]
        if not records:
            return np.zeros((0, self.image_size, self.image_size, 3), np.uint8), records
        return np.stack([self.render(r) for r in records]), records


KINDS: dict[str, SceneKind] = {
    "shapes32": SceneKind(
        "shapes32",
        render.IMAGE_SIZE,
        render.ATTRIBUTES,
        render.sample_record,
        render.render,
        oracle.read_batch,
        render.caption_of,
    ),
    "patterns64": SceneKind(
        "patterns64",
        patterns.IMAGE_SIZE,
        patterns.ATTRIBUTES,
        patterns.sample_pattern_record,
        patterns.render_pattern,
        pattern_oracle.read_pattern_batch,
        patterns.caption_of,
        {"tag": {"untagged": 1 - patterns.TAG_RATE, "tagged": patterns.TAG_RATE}},
    ),
}


def kind_of_size(height: int, width: int) -> SceneKind | None:
    """The scene kind whose images are ``height`` x ``width`` pixels, None if no kind is."""
    return next((kind for kind in KINDS.values() if (kind.image_size, kind.image_size) == (height, width)), None)


def scene_kind(name: str) -> SceneKind:
    """The kind called ``name``, or a FeatscopeError listing the kinds."""
    if name not in KINDS:
        raise FeatscopeError(f"unknown world kind {name!r}{suggest(name, KINDS)}; known: {', '.join(KINDS)}")
    return KINDS[name]
