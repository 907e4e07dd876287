"""Quality of a world diffusion model (a training checkpoint or a pipeline folder) under several samplers.

    python benchmarks/scripts/world_quality.py src/featscope/world/weights/ddpm \
        --samplers ddim:10:trailing ddim:25:trailing --out runs/world-ddpm-quality.jsonl

Each sampler is KIND:STEPS[:SPACING] (KIND ddim or ddpm; SPACING leading, trailing or linspace, default: the
model's own). One JSON line per sampler is appended to --out, with the model's training step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from featscope.backbones import load_backbone
from featscope.world.quality import evaluate_world_model
from featscope.world.train import export_ddpm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="checkpoint.pt of `featscope world train ddpm`, or a pipeline folder")
    parser.add_argument("--samplers", nargs="+", default=["ddim:10"], help="KIND:STEPS[:SPACING]")
    parser.add_argument("--n", type=int, default=128, help="unconditional and captioned samples each")
    parser.add_argument("--n-captioned", type=int, default=None, help="captioned samples (default: --n)")
    parser.add_argument("--seed", type=int, default=0, help="unconditional sample i uses seed SEED + i")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.model)
        if folder.is_file():
            folder = export_ddpm(folder, Path(tmp) / "model")
        training = json.loads((folder / "training.json").read_text()) if (folder / "training.json").is_file() else {}
        backbone = load_backbone(f"pixel:{folder}")
    for spec in args.samplers:
        kind, steps, *spacing = spec.split(":")
        if spacing:
            backbone.scheduler_config["timestep_spacing"] = spacing[0]
        tic = time.time()
        record = evaluate_world_model(
            backbone, n=args.n, n_captioned=args.n_captioned, num_steps=int(steps), sampler=kind, seed=args.seed
        )
        record.update(
            sampler=kind,
            seed=args.seed,
            timestep_spacing=backbone.scheduler_config.get("timestep_spacing"),
            seconds=round(time.time() - tic, 1),
            model=args.model,
            training=training,
        )
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        caption = ""
        if record["caption_match_rate"] is not None:
            per = ", ".join(f"{k} {v:.0%}" for k, v in record["caption_match_per_attribute"].items())
            caption = f", caption match {record['caption_match_rate']:.1%} ({per})"
        gaps = ", ".join(f"{k} {v:.0f}" for k, v in record["max_frequency_gap_points"].items())
        noise = ", ".join(f"{v:.0f}" for v in record["sampling_noise_gap_points"].values())
        print(f"{spec}: valid {record['valid_rate']:.1%}{caption}, gaps {gaps} (noise {noise})")


if __name__ == "__main__":
    main()
