"""Inputs several test modules build the same way: a world image with its caption file, the files of one
investigation item, and a small decode study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from featscope.world.render import generate

# what every real-image item folder of word-swap and neuron-on-images holds
ITEM_LAYOUT = ("target.png", "initial.png", "best.png", "final.png", "sheet.png", "metrics.json", "config.yaml",
               "log.jsonl")  # fmt: skip

# a three-target decode study: resumes and disk-full runs interrupt it part-way
DECODE_STUDY = """
name: {name}
out: out
device: cpu
jobs:
  - method: decode
    targets: yellow-star.png
    seeds: [0, 1, 2]
    preset: faster
    settings: {{num_steps: 4, recurrence: 1}}
"""


def save_world_image(path: Path, *, seed: int, shape: str, index: int = 0) -> tuple[np.ndarray, str]:
    """Image ``index`` of ``generate(index + 1, seed, shape)`` as the PNG ``path``, its caption in ``path``'s
    ``.txt`` sibling; returns (pixels (H, W, 3), caption)."""
    pixels, records = generate(index + 1, seed=seed, shape=shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[index]).save(path)
    caption = records[index].caption()
    path.with_suffix(".txt").write_text(caption)
    return pixels[index], caption
