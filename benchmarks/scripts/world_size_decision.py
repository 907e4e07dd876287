"""At which noise level does a world diffusion model decide an object's size, and with which bias?

    python benchmarks/scripts/world_size_decision.py world:ddpm --starts 950 900 850 --out FILE.jsonl

256 fresh world images (half small, half large in expectation) are noised to the first DDIM-100 timestep
at or below each start, then sampled back with the empty caption; the oracle reads the size again. An
unbiased model returns as many small objects as it was given; the share of small objects among the valid
results shows where the model's preference for small objects enters the chain. One JSON line per start.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.world.oracle import read_batch
from featscope.world.render import render, sample_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="backbone spec, e.g. world:ddpm or pixel:FOLDER")
    parser.add_argument("--starts", nargs="+", type=int, default=[950, 900, 850, 800, 700])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model)
    rng = np.random.default_rng(7)
    records = [sample_record(rng) for _ in range(args.n)]
    x0 = backbone.encode(to_tensor(np.stack([render(r) for r in records])))
    sizes = np.array([r.size for r in records])
    cond = backbone.encode_prompt([""] * args.n)
    scheduler = backbone.make_scheduler("ddim", 100)
    abar = backbone.alphas_cumprod
    noise_gen = torch.Generator().manual_seed(0)
    for start in args.starts:
        steps = [int(t) for t in scheduler.timesteps if int(t) <= start]
        noise = torch.randn(x0.shape, generator=noise_gen)
        z = abar[steps[0]].sqrt() * x0 + (1 - abar[steps[0]]).sqrt() * noise
        with torch.no_grad():
            for t in steps:
                z = scheduler.step(backbone.eps(z, t, cond), t, z).prev_sample
        readings = read_batch(backbone.decode(z).clamp(0, 1))
        read = np.array([r.size if r.valid else "unparseable" for r in readings])
        valid = read != "unparseable"
        record = {
            "model": args.model,
            "start_timestep": steps[0],
            "samples": args.n,
            "valid_rate": float(valid.mean()),
            "large_kept": float(np.mean(read[sizes == "large"] == "large")),
            "small_kept": float(np.mean(read[sizes == "small"] == "small")),
            "small_share_given": float(np.mean(sizes == "small")),
            "small_share_returned": float(np.mean(read[valid] == "small")),
        }
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
