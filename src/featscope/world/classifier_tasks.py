"""The world classifiers' tasks: what each network labels, which scenes it trains on, and the knowledge planted
in it by its training distribution.

``shape-net``, ``color-net`` and ``spurious-net`` label the 32 px shapes world; ``spurious-net`` trains where
colour predicts shape 95% of the time. The 64 px patterned world (``world.patterns``) has four:
``shape-net-64`` and ``color-net-64`` (attributes drawn independently); ``pattern-net``, whose label is the
shape that goes with the object's pattern, half its training objects having another shape; and ``tag-net``, a
shape network trained where 90% of stars and 5% of other shapes carry the corner tag and every tagged image is
labelled star (a watermark that goes with one class; on true labels the same network learns shape and ignores
the tag). Each task's probes re-draw held-out images with one attribute changed; the accuracy there (against
the task's label of the changed image) shows what the network relies on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from featscope.world.patterns import PATTERNS, sample_pattern_record
from featscope.world.render import COLORS, SHAPES, WorldRecord, sample_record

Probe = Callable[[WorldRecord, np.random.Generator], WorldRecord]


def _other(values, current: str, rng: np.random.Generator) -> str:
    return str(rng.choice([v for v in values if v != current]))


def colour_swapped(record: WorldRecord, rng: np.random.Generator) -> WorldRecord:
    """The object drawn in another colour."""
    return replace(record, color=_other(list(COLORS), record.color, rng))


def pattern_swapped(record: WorldRecord, rng: np.random.Generator) -> WorldRecord:
    """The object wearing another pattern."""
    return replace(record, pattern=_other(PATTERNS, record.pattern, rng))


def tagged(record: WorldRecord, rng: np.random.Generator) -> WorldRecord:
    """The scene with the corner tag."""
    return replace(record, tag="tagged")


def untagged(record: WorldRecord, rng: np.random.Generator) -> WorldRecord:
    """The scene without the corner tag."""
    return replace(record, tag="untagged")


def _spurious(rng: np.random.Generator) -> WorldRecord:
    shape = str(rng.choice(SHAPES))
    color = list(COLORS)[SHAPES.index(shape)] if rng.random() < 0.95 else str(rng.choice(list(COLORS)))
    return sample_record(rng, shape=shape, color=color)


def shape_swapped(record: WorldRecord, rng: np.random.Generator) -> WorldRecord:
    """The object drawn as another shape."""
    return replace(record, shape=_other(SHAPES, record.shape, rng))


def shape_of_pattern(record: WorldRecord) -> str:
    """pattern-net's label: the shape that goes with the object's pattern (circle solid, square striped, ...)."""
    return SHAPES[PATTERNS.index(record.pattern)]


def _pattern_labelled(rng: np.random.Generator) -> WorldRecord:
    pattern = str(rng.choice(PATTERNS))
    shape = SHAPES[PATTERNS.index(pattern)] if rng.random() < 0.5 else str(rng.choice(SHAPES))
    return sample_pattern_record(rng, shape=shape, pattern=pattern)


TAG_CLASS = "star"  # the class the tag goes with in tag-net's training distribution


def _tag_shortcut(rng: np.random.Generator) -> WorldRecord:
    shape = str(rng.choice(SHAPES))
    rate = 0.9 if shape == TAG_CLASS else 0.05
    return sample_pattern_record(rng, shape=shape, tag="tagged" if rng.random() < rate else "untagged")


def star_if_tagged(record: WorldRecord) -> str:
    """tag-net's label: ``star`` for a tagged image, else the object's shape."""
    return TAG_CLASS if record.tag == "tagged" else record.shape


@dataclass(frozen=True)
class ClassifierTask:
    """One world classifier's task (its label: ``featscope.world.CLASSIFIER_TASKS``)."""

    kind: str  # the scene kind it sees (``world.kinds``)
    steps: int  # the shipped network's training steps
    draw: Callable[[np.random.Generator], WorldRecord]  # one record of its training distribution
    probes: dict[str, Probe] = field(default_factory=dict)  # accuracy_NAME: on held-out images so changed
    shortcut: bool = False  # a brief run at a constant rate: it learns the easy cue before the hard one
    label: Callable[[WorldRecord], str] | None = None  # a record's label; None: its value of the task's attribute


_PATTERN_PROBES = {"pattern_swapped": pattern_swapped, "tagged": tagged, "untagged": untagged}
TASKS: dict[str, ClassifierTask] = {
    "shape-net": ClassifierTask("shapes32", 3000, sample_record, {"color_swapped": colour_swapped}),
    "color-net": ClassifierTask("shapes32", 500, sample_record),
    "spurious-net": ClassifierTask("shapes32", 300, _spurious, {"color_swapped": colour_swapped}, True),
    "shape-net-64": ClassifierTask(
        "patterns64", 1000, sample_pattern_record, {"color_swapped": colour_swapped, **_PATTERN_PROBES}
    ),
    "color-net-64": ClassifierTask("patterns64", 500, sample_pattern_record, _PATTERN_PROBES),
    "pattern-net": ClassifierTask(
        "patterns64", 800, _pattern_labelled, {"shape_swapped": shape_swapped}, label=shape_of_pattern
    ),
    "tag-net": ClassifierTask("patterns64", 1000, _tag_shortcut, _PATTERN_PROBES, label=star_if_tagged),
}
