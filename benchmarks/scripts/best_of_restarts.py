"""Best of R restarts of a preset on the preset-search targets, against reference's stored distances.

    python benchmarks/scripts/best_of_restarts.py fast 12 --out runs/best-of-restarts-fast12.json

Decodes the 6 targets of docs/speed.md (seed 0, n 2 and seed 100, n 4) R times each, restart r of target i
from seed (target seed + i + 1000 r), so restart 0 is the bench's own run. For every R' <= R it prints the
median over targets of the best relative distance among the first R' restarts, and its evaluations as a share
of reference's, read from the `reference` row of the shipped model's preset search
(benchmarks/records/preset-search-v7250/{tuning,held-out}/presets/results.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.bench.run import features_of, pair_reference, score_samples, solve
from featscope.extractors import load_extractor
from featscope.solvers.configs import preset
from featscope.world.render import generate

TARGETS = (("tuning", 0, 2), ("held-out", 100, 4))
SEARCH = Path(__file__).parents[1] / "records" / "preset-search-v7250"


def reference_rows() -> tuple[list[float], int]:
    """Reference's relative distances on the 6 targets, in target order, and its evaluations per image."""
    distances, evaluations = [], 0
    for folder, _, _ in TARGETS:
        rows = json.loads((SEARCH / folder / "presets" / "results.json").read_text())["extractors"][0]["rows"]
        row = next(r for r in rows if r["label"] == "reference")
        distances += [s["relative_distance"] for s in row["samples"]]
        evaluations = row["network_evaluations_per_image"]
    return distances, evaluations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("restarts", type=int)
    parser.add_argument("--out", required=True, help="JSON file for every restart's relative distance")
    args = parser.parse_args()
    config = preset(args.preset)
    backbone, extractor = load_backbone("world:ddpm"), load_extractor("world:shape-net")
    rel, evaluations = [], 0
    for _, seed, n in TARGETS:
        images, records = generate(n, seed)
        features = features_of(extractor, images).repeat(args.restarts, 1)
        seeds = [seed + i + 1000 * r for r in range(args.restarts) for i in range(n)]
        best, evaluations, _, _ = solve(
            backbone, extractor, features, config, seeds=seeds, dtype=torch.float32, quiet=True
        )
        samples = score_samples(best, features, records * args.restarts, extractor, pair_reference(extractor, seed))
        rel += np.array([s["relative_distance"] for s in samples]).reshape(args.restarts, n).T.tolist()
    reference, reference_evaluations = reference_rows()
    print(f"reference: median {np.median(reference):.3g}, {reference_evaluations} evaluations")
    for r in range(1, args.restarts + 1):
        best_of = [min(row[:r]) for row in rel]
        share = 100 * r * evaluations / reference_evaluations
        print(f"R={r}: {r * evaluations} evaluations ({share:.1f}%), median {np.median(best_of):.3g}")
    record = {
        "preset": args.preset,
        "restarts": args.restarts,
        "evaluations_per_restart": evaluations,
        "relative_distance": rel,
        "reference": reference,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
