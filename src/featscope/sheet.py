"""``sheet.png``: a run's inputs and results side by side, labelled, large enough to see at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from featscope.images import save_image, to_uint8

MIN_CELL = 128  # small images are upscaled (nearest neighbour) to at least this many pixels a side
FONT_SIZE = 14
PAD = 6


def _cell(image: torch.Tensor | None, side: int) -> Image.Image:
    if image is None:
        return Image.new("RGB", (side, side), (235, 235, 235))
    array = to_uint8(image.detach().float().cpu()[None])[0]
    h, w = array.shape[:2]
    scale = max(1, side // max(h, w))
    cell = Image.fromarray(array).resize((w * scale, h * scale), Image.NEAREST)
    canvas = Image.new("RGB", (side, side), "white")
    canvas.paste(cell, ((side - cell.width) // 2, (side - cell.height) // 2))
    return canvas


def sheet(
    columns: Sequence[str],
    rows: Sequence[Sequence[torch.Tensor | None]],
    *,
    row_labels: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
) -> np.ndarray:
    """An (H, W, 3) uint8 image: one labelled column per name in ``columns``, one row per entry of ``rows``
    (images (3, h, w) in [0, 1], None for an empty cell), each row optionally labelled on the left and with a
    line of ``notes`` below it (no note line when every note is empty)."""
    font = ImageFont.load_default(size=FONT_SIZE)
    largest = max((max(im.shape[-2:]) for row in rows for im in row if im is not None), default=MIN_CELL)
    side = max(largest, MIN_CELL) if largest >= MIN_CELL else largest * -(-MIN_CELL // largest)
    labels = list(row_labels or [""] * len(rows))
    label_width = max((int(font.getlength(text)) for text in labels), default=0)
    label_width = label_width + 2 * PAD if label_width else 0
    line = FONT_SIZE + PAD
    notes = notes if notes and any(notes) else None
    note_height = line if notes else 0
    note_width = max((int(font.getlength(text)) for text in notes or []), default=0)
    width = label_width + max(len(columns) * (side + PAD), note_width + PAD) + PAD
    height = line + len(rows) * (side + PAD + note_height) + PAD
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(columns):
        draw.text((label_width + PAD + j * (side + PAD), PAD // 2), name, fill="black", font=font)
    for i, row in enumerate(rows):
        top = line + i * (side + PAD + note_height)
        draw.text((PAD, top + side // 2 - FONT_SIZE // 2), labels[i], fill="black", font=font)
        for j, image in enumerate(row):
            canvas.paste(_cell(image, side), (label_width + PAD + j * (side + PAD), top))
        if notes:
            draw.text((label_width + PAD, top + side + PAD // 2), notes[i], fill=(60, 60, 60), font=font)
    return np.asarray(canvas)


def save_sheet(path: str | Path, columns: Sequence[str], rows: Sequence[Sequence[torch.Tensor | None]], **kw) -> None:
    """Write :func:`sheet` to ``path`` (atomically)."""
    save_image(sheet(columns, rows, **kw), path)
