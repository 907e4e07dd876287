"""What the patterned world's networks rely on, on held-out images of an evaluation split.

    python benchmarks/scripts/planted_networks.py --split test --n 512 \
        --out benchmarks/records/latent-world/planted.json

Per network (``world:shape-net-64``, ``color-net-64``, ``pattern-net``, ``tag-net``): accuracy against its own
label on the split's images and on the same images changed by each of its probes (another pattern, the tag added,
...), each with its 95% interval; for the shape-labelled networks also how often the prediction is the object's
shape and how often the shape that goes with its pattern (pattern-net's label); for tag-net how often a tagged
image that is not a star is called a star.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import featscope
from featscope.bench.stats import proportion
from featscope.images import to_tensor
from featscope.world.classifier_tasks import TAG_CLASS, shape_of_pattern, tagged
from featscope.world.patterns import render_pattern
from featscope.world.splits import split_records
from featscope.world.train import evaluate_classifier

NETWORKS = ("shape-net-64", "color-net-64", "pattern-net", "tag-net")


def predictions(network: torch.nn.Module, records: list, labels: tuple[str, ...]) -> list[str]:
    images = to_tensor(np.stack([render_pattern(r) for r in records]))
    with torch.no_grad():
        return [labels[i] for i in network(images).argmax(1).tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", choices=["tuning", "test"])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--weights", type=Path, help="a folder of NAME.safetensors to use instead of the shipped")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    records = split_records(args.n, args.split, kind="patterns64")
    report = {"split": args.split, "n": args.n, "networks": {}}
    for name in NETWORKS:
        weights = str(args.weights / f"{name}.safetensors") if args.weights else None
        extractor = featscope.load_extractor(f"world:{name}@fc", weights=weights)
        rates = evaluate_classifier(extractor.network, name, records=records, seed=args.n)
        entry = {k: proportion(round(v * args.n), args.n) for k, v in rates.items()}
        if name != "color-net-64":
            said = predictions(extractor.network, records, extractor.labels)
            entry["says_shape"] = proportion(sum(s == r.shape for s, r in zip(said, records, strict=True)), args.n)
            entry["says_pattern_shape"] = proportion(
                sum(s == shape_of_pattern(r) for s, r in zip(said, records, strict=True)), args.n
            )
        if name == "tag-net":
            others = [tagged(r, None) for r in records if r.shape != TAG_CLASS]
            said = predictions(extractor.network, others, extractor.labels)
            entry["tagged_non_star_called_star"] = proportion(sum(s == TAG_CLASS for s in said), len(others))
        report["networks"][name] = entry
        print(name, {k: f"{v['rate']:.1%} [{v['low']:.0%}, {v['high']:.0%}]" for k, v in entry.items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
