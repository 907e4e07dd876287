"""The shapes world: a deterministic generator of small images with known attributes.

Every image holds one object on a flat background. Its attributes are drawn independently
and uniformly: shape, colour, size, position (a 3x3 grid) and background. Small jitter in
position and rotation keeps images from being exact copies of each other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 210, 40),
    "magenta": (210, 50, 200),
    "cyan": (40, 200, 210),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "dark": (25, 25, 30),
    "grey": (125, 125, 125),
    "light": (235, 235, 230),
}
SIZES: dict[str, float] = {"small": 5.5, "large": 9.0}
ROWS: dict[str, float] = {"top": 10.0, "middle": 16.0, "bottom": 22.0}
COLS: dict[str, float] = {"left": 10.0, "center": 16.0, "right": 22.0}
POSITIONS: tuple[str, ...] = tuple(f"{r}-{c}" for r in ROWS for c in COLS)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": tuple(COLORS),
    "size": tuple(SIZES),
    "position": POSITIONS,
    "background": tuple(BACKGROUNDS),
}
POSITION_JITTER = 1.0
ROTATION_JITTER = 15.0


@dataclass(frozen=True)
class WorldRecord:
    """The attributes of one world image, with the continuous values used to draw it."""

    shape: str
    color: str
    size: str
    position: str
    background: str
    cx: float
    cy: float
    radius: float
    angle: float

    attribute_names: ClassVar[tuple[str, ...]] = tuple(ATTRIBUTES)  # the categorical ones, in order

    def attributes(self) -> dict[str, str]:
        """The categorical attributes (five; a patterned record's seven)."""
        return {name: getattr(self, name) for name in self.attribute_names}

    def caption(self) -> str:
        """A caption of attribute words, e.g. ``small red star top-left on dark``."""
        return self.words(self.attributes())

    @staticmethod
    def words(attributes: dict[str, str]) -> str:
        """The caption of any subset of the attributes (:func:`caption_of`)."""
        return caption_of(attributes)

    def to_dict(self) -> dict:
        return asdict(self)


def caption_of(attributes: dict[str, str]) -> str:
    """Caption for any subset of attributes, in the fixed word order the model was trained on."""
    words = [attributes[k] for k in ("size", "color", "shape", "position") if k in attributes]
    if "background" in attributes:
        words += ["on", attributes["background"]]
    return " ".join(words)


def sample_record(rng: np.random.Generator, **fixed: str) -> WorldRecord:
    """Draw one record; any attribute may be fixed by keyword (``shape="star"``)."""
    for name, value in fixed.items():
        if name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
            raise ValueError(f"unknown world attribute {name}={value!r}")
    chosen = {name: fixed.get(name) or str(rng.choice(values)) for name, values in ATTRIBUTES.items()}
    row, col = chosen["position"].split("-")
    jitter = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    return WorldRecord(
        **chosen,
        cx=float(COLS[col] + jitter[0]),
        cy=float(ROWS[row] + jitter[1]),
        radius=SIZES[chosen["size"]],
        angle=float(rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)),
    )


def shape_polygon(shape: str, cx: float, cy: float, radius: float, angle_deg: float) -> list[tuple[float, float]]:
    """Vertices of a shape (circle approximated by 64 vertices), in pixel coordinates."""
    if shape == "circle":
        points = [(math.cos(2 * math.pi * i / 64), math.sin(2 * math.pi * i / 64)) for i in range(64)]
    elif shape == "square":
        s = 0.8
        points = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        points = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        points = [(x, y + 0.15) for x, y in points]
    elif shape == "star":
        points = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.45
            a = -math.pi / 2 + i * math.pi / 5
            points.append((r * math.cos(a), r * math.sin(a)))
    elif shape == "cross":
        a, b = 0.95, 0.32
        points = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return [(cx + radius * (c * x - s * y), cy + radius * (s * x + c * y)) for x, y in points]


def render(record: WorldRecord, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw a record as a (size, size, 3) uint8 array, antialiased by supersampling."""
    big = size * SUPERSAMPLE
    scale = big / IMAGE_SIZE
    image = Image.new("RGB", (big, big), BACKGROUNDS[record.background])
    polygon = shape_polygon(record.shape, record.cx * scale, record.cy * scale, record.radius * scale, record.angle)
    ImageDraw.Draw(image).polygon(polygon, fill=COLORS[record.color])
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def object_mask(record: WorldRecord, size: int = IMAGE_SIZE) -> np.ndarray:
    """The object's pixels in ``render(record, size)``: (size, size) float coverage in [0, 1]."""
    big = size * SUPERSAMPLE
    scale = big / IMAGE_SIZE
    image = Image.new("L", (big, big), 0)
    polygon = shape_polygon(record.shape, record.cx * scale, record.cy * scale, record.radius * scale, record.angle)
    ImageDraw.Draw(image).polygon(polygon, fill=255)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255


def generate(n: int, seed: int, **fixed: str) -> tuple[np.ndarray, list[WorldRecord]]:
    """``n`` images (n, 32, 32, 3) uint8 and their records, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    records = [sample_record(rng, **fixed) for _ in range(n)]
    images = np.stack([render(r) for r in records]) if records else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return images, records
