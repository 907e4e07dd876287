"""One grid from several `featscope bench decode` folders on the same targets: one column per target, one row per
(extractor, row label) picked from the folders, the targets first (the bench's grid.png, across runs).

    python benchmarks/scripts/compare_grid.py runs/a:fast,best-of-n runs/b:lucent,maco --out grid.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from featscope.bench.report import SAMPLES_SHOWN, grid_figure


def images(folder: Path, count: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:03d}.png").convert("RGB")) for i in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="FOLDER:LABEL,LABEL")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    decoded, targets = {}, None
    for spec_of_run in args.runs:
        folder, labels = spec_of_run.rsplit(":", 1)
        folder = Path(folder)
        report = json.loads((folder / "results.json").read_text())
        shown = min(SAMPLES_SHOWN, report["config"]["n"])
        run_targets = images(folder / "images" / "targets", shown)
        if targets is not None and not np.array_equal(targets, run_targets):
            raise SystemExit(f"{folder}: other targets than the first folder's")
        targets = run_targets
        for entry in report["extractors"]:
            for row in entry["rows"]:
                if row["label"] in labels.split(","):
                    decoded[entry["extractor"], row["label"]] = images(folder / row["images"], shown)
    extractors = list(dict.fromkeys(key[0] for key in decoded))
    order = sorted(decoded, key=lambda key: extractors.index(key[0]))  # grouped by extractor, in order of appearance
    args.out.write_bytes(grid_figure(targets, {key: decoded[key] for key in order}))


if __name__ == "__main__":
    main()
