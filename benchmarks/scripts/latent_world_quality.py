"""Quality of the latent world's Stable Diffusion pipeline on an evaluation split of patterned scenes.

    python benchmarks/scripts/latent_world_quality.py world:latent --split tuning --guidance 1 3 5 \
        --out benchmarks/records/latent-world/quality.jsonl

Per guidance scale, ``evaluate_world_model`` (unguided samples: oracle-valid rate and attribute frequencies
against the generator's; captioned samples with the split's captions: caption match), and once the VAE's round
trip on the split's images (share of images whose every attribute the oracle reads back). One JSON line each.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from featscope.backbones import load_backbone
from featscope.bench.stats import proportion
from featscope.images import to_tensor
from featscope.world.kinds import scene_kind
from featscope.world.oracle import agreement
from featscope.world.quality import evaluate_world_model
from featscope.world.splits import split_images

KIND = "patterns64"


def vae_round_trip(backbone, split: str, n: int, batch: int = 64) -> dict:
    """Encode and decode ``n`` split images with the backbone's VAE (posterior mean); the oracle reads both."""
    scene = scene_kind(KIND)
    images, records = split_images(n, split, kind=KIND)
    kept = {name: 0 for name in scene.attributes}
    every = 0
    for start in range(0, n, batch):
        x = to_tensor(images[start : start + batch])
        with torch.no_grad():
            decoded = backbone.decode(backbone.encode(x)).clamp(0, 1)
        for record, reading in zip(records[start : start + batch], scene.read_batch(decoded), strict=True):
            same = [agreement(record.attributes(), reading)[k] for k in scene.attributes]
            every += all(same)
            for name, hit in zip(scene.attributes, same, strict=True):
                kept[name] += hit
    return {"round_trip_all": proportion(every, n), "round_trip": {k: proportion(v, n) for k, v in kept.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", help="world:latent or sd:FOLDER")
    parser.add_argument("--split", default="tuning", choices=["tuning", "test"])
    parser.add_argument("--n", type=int, default=128, help="unconditional and captioned samples each")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--guidance", type=float, nargs="+", default=[3.0], help="classifier-free guidance scales")
    parser.add_argument("--round-trip", type=int, default=512, help="split images for the VAE round trip (0: none)")
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    backbone = load_backbone(args.backbone)
    records = []
    if args.round_trip:
        trip = vae_round_trip(backbone, args.split, args.round_trip)
        records.append({"backbone": args.backbone, "split": args.split, **trip})
    for scale in args.guidance:
        tic = time.time()
        record = evaluate_world_model(
            backbone, n=args.n, num_steps=args.steps, guidance_scale=scale, kind=KIND, split=args.split
        )
        record.update(backbone=args.backbone, seconds=round(time.time() - tic, 1))
        records.append(record)
        gaps = ", ".join(f"{k} {v:.0f}" for k, v in record["max_frequency_gap_points"].items())
        per = ", ".join(f"{k} {v:.0%}" for k, v in record["caption_match_per_attribute"].items())
        print(
            f"cfg {scale}: valid {record['valid_rate']:.1%}, caption match {record['caption_match_rate']:.1%} "
            f"({per}), captioned valid {record['captioned_valid_rate']:.1%}, gaps {gaps}"
        )
    with open(args.out, "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    if args.round_trip:
        print("round trip, every attribute:", records[0]["round_trip_all"])


if __name__ == "__main__":
    main()
