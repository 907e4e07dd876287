"""Merge `featscope bench` results on the same targets into one folder: one table and one plot.

    python benchmarks/scripts/merge_bench.py runs/bench-reference runs/bench-presets --out runs/bench-merged

Useful when an expensive row (the `reference` preset) ran on its own, or rows ran with different settings:
each row keeps its own settings in results.json. The inputs must share n, seed, backbone and extractors;
row labels must not repeat within an extractor. A mismatch is a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from featscope.bench.run import RESULTS, check_out, write_outputs
from featscope.images import load_image, to_uint8
from featscope.world.render import generate

SHARED = ("n", "seed", "backbone", "extractors")


def merge(folders: list[Path]) -> tuple[dict, dict]:
    """The merged report and the decoded images of every (extractor, row label)."""
    missing = [str(folder) for folder in folders if not (folder / RESULTS).is_file()]
    if missing:
        raise ValueError(f"no {RESULTS} in {', '.join(missing)}; give `featscope bench` output folders")
    reports = [json.loads((folder / RESULTS).read_text()) for folder in folders]
    first = reports[0]
    for folder, report in zip(folders[1:], reports[1:], strict=True):
        for key in SHARED:
            if report["config"][key] != first["config"][key]:
                raise ValueError(f"{folder}: {key} {report['config'][key]!r} differs from {first['config'][key]!r}")
    merged = {**first, "config": {**first["config"], "merged_from": [str(f) for f in folders]}, "extractors": []}
    merged["config"]["presets"] = [p for r in reports for p in r["config"]["presets"]]
    merged["config"]["settings"] = "per row (rows[].settings)"
    decoded = {}
    for index, entry in enumerate(first["extractors"]):
        rows = []
        for folder, report in zip(folders, reports, strict=True):
            for row in report["extractors"][index]["rows"]:
                key = (entry["extractor"], row["label"])
                if key in decoded:
                    raise ValueError(f"{folder}: row {row['label']!r} of {key[0]} is already in an earlier input")
                files = sorted((folder / row["images"]).glob("*.png"))
                decoded[key] = np.stack([to_uint8(load_image(f))[0] for f in files])
                rows.append(row)
        merged["extractors"].append({**entry, "rows": rows})
    return merged, decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="bench output folders (results.json inside)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    check_out(args.out, args.overwrite)
    try:
        report, decoded = merge(args.folders)
    except ValueError as error:
        parser.error(str(error))
    targets, _ = generate(report["config"]["n"], report["config"]["seed"])
    write_outputs(args.out, report, targets, decoded)
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
