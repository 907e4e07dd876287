"""sheet.png: labelled columns and rows, small images upscaled without blurring."""

from __future__ import annotations

import torch

from featscope.sheet import MIN_CELL, sheet


def test_small_images_are_upscaled_by_nearest_neighbour_and_notes_fit():
    image = torch.zeros(3, 32, 32)
    image[0, :16] = 1.0  # top half red: an upscaled copy keeps a sharp edge
    note = "kept: shape | changed: colour yellow->magenta, size large->small, position centre->left"
    array = sheet(["target", "best"], [[image, None]], row_labels=["star"], notes=[note])
    red = (array[..., 0] == 255) & (array[..., 1] == 0) & (array[..., 2] == 0)
    rows, cols = red.nonzero()
    assert rows.max() - rows.min() + 1 == MIN_CELL // 2 and cols.max() - cols.min() + 1 == MIN_CELL
    assert not ((array[..., 0] > 0) & (array[..., 0] < 255) & (array[..., 1] == 0)).any()  # no blended edge
    assert array.shape[1] > 2 * MIN_CELL + 200  # widened for the note
