"""Write world samples to disk: PNG images and a records.jsonl with their attributes and captions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from featscope.errors import FeatscopeError, suggest
from featscope.runs import atomic_write_bytes, atomic_write_text
from featscope.world.kinds import DEFAULT_KIND, scene_kind

RECORDS = "records.jsonl"


def _check_fixed(fixed: dict[str, str], attributes: dict[str, tuple[str, ...]]) -> None:
    """Refuse unknown attribute names or values, with a hint."""
    for name, value in fixed.items():
        if name not in attributes:
            raise FeatscopeError(f"unknown world attribute {name!r}{suggest(name, attributes)}")
        if value not in attributes[name]:
            raise FeatscopeError(
                f"unknown {name} {value!r}{suggest(value, attributes[name])}; known: {', '.join(attributes[name])}"
            )


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples(
    n: int, out: Path, seed: int = 0, overwrite: bool = False, kind: str = DEFAULT_KIND, **fixed: str
) -> list[Path]:
    """Write ``n`` world images as ``out/world_00000.png`` ... and ``out/records.jsonl``; returns the PNG paths.

    ``kind`` is the scene kind (``world.kinds``); any of its attributes may be fixed by keyword (``shape="star"``).
    Refuses a folder that already holds a records.jsonl unless ``overwrite``; overwriting first removes the old
    records.jsonl and ``world_*.png``.
    records.jsonl is written last, so its presence marks a complete sample.
    """
    out = Path(out)
    scene = scene_kind(kind)
    _check_fixed(fixed, scene.attributes)
    if (out / RECORDS).exists():
        if not overwrite:
            raise FeatscopeError(f"{out} already holds world samples ({RECORDS}); pass overwrite=True to replace them")
        (out / RECORDS).unlink()
        for old in out.glob("world_*.png"):
            old.unlink()
    images, records = scene.generate(n, seed, **fixed)
    paths, lines = [], []
    for i, (image, record) in enumerate(zip(images, records, strict=True)):
        path = atomic_write_bytes(out / f"world_{i:05d}.png", _png_bytes(image))
        paths.append(path)
        lines.append(json.dumps({"file": path.name, **record.to_dict(), "caption": record.caption()}))
    atomic_write_text(out / RECORDS, "".join(line + "\n" for line in lines))
    return paths
