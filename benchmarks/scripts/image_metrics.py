"""Pixel noise and background deviation (featscope bench's columns) of folders of saved images.

    python benchmarks/scripts/image_metrics.py runs/bench/images/world-shape-net/reference runs/other/images/...

For records whose results.json predates a column: the bench scores the saved 8-bit PNGs, so the numbers
are the same as the bench would have written. Prints one line per folder: medians over its images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from featscope.bench.metrics import background_deviation, pixel_noise
from featscope.images import load_image, to_uint8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="folders of PNG images")
    args = parser.parse_args()
    for folder in args.folders:
        files = sorted(folder.glob("*.png"))
        if not files:
            parser.error(f"no PNG images in {folder}")
        images = np.stack([to_uint8(load_image(f))[0] for f in files])
        noise, background = np.median(pixel_noise(images)), np.nanmedian(background_deviation(images))
        print(f"pixel noise {noise:.2f}  bg dev. {background:.2f}  ({len(files)} images)  {folder}")


if __name__ == "__main__":
    main()
