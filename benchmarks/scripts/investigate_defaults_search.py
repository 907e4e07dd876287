"""Choose the world's end-to-end defaults on the tuning split: a small grid of learning-rate scales.

Each scale s multiplies DiG-IN's published learning rates (x_T 1e-3, prompt and null-text deltas 1e-2); every
other setting stays published. Per scale it runs the investigation bench's measurements (the cores users run):
counterfactuals circle -> square of tuning-split images with and without the background regularisers, and
neuron gains of world:shape-net's penultimate channels from plain samples (optionally classifier differences).
Generated samples (neurons, differences) start from seeds ``--noise-seed + ...`` (default 7,000,000, the tuning
split's seed), so none is a sample the test bench (seeds from 0) reports. One JSON line per scale and method.

    OMP_NUM_THREADS=1 python benchmarks/scripts/investigate_defaults_search.py --scales 1,3,10 --n 8 \\
        --out benchmarks/records/investigate-world/tuning-search.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from featscope.backbones import load_backbone
from featscope.bench.investigation import counterfactual_bench, difference_bench, neuron_bench
from featscope.bench.targets import TargetSource
from featscope.extractors import load_extractor
from featscope.solvers.configs import EndToEndConfig

PUBLISHED = EndToEndConfig()


def scaled(scale: float) -> EndToEndConfig:
    """The published settings with every learning rate multiplied by ``scale``."""
    return PUBLISHED.with_overrides(
        latent_lr=PUBLISHED.latent_lr * scale, cond_lr=PUBLISHED.cond_lr * scale, uncond_lr=PUBLISHED.uncond_lr * scale
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,3,10", help="learning-rate multipliers, comma-separated")
    p.add_argument("--methods", default="counterfactual,neuron", help="counterfactual, neuron, difference")
    p.add_argument("--n", type=int, default=8, help="tuning-split images for the counterfactuals")
    p.add_argument("--channels", default="0,1,2,3", help="penultimate channels of world:shape-net")
    p.add_argument("--samples", type=int, default=2, help="neuron samples per channel, difference samples per shape")
    p.add_argument("--noise-seed", type=int, default=7_000_000, help="first seed of generated samples")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--out", required=True, help="JSON lines file (appended)")
    args = p.parse_args()
    torch.set_num_threads(1)
    backbone = load_backbone("world:ddpm", device="cpu")
    shape_net = load_extractor("world:shape-net", device="cpu")
    source = TargetSource("tuning", None)
    methods = args.methods.split(",")
    channels = [int(c) for c in args.channels.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for scale in [float(s) for s in args.scales.split(",")]:
        config = scaled(scale)
        for method in methods:
            tic = time.time()
            with tempfile.TemporaryDirectory() as scratch:  # the bench's image grids are not kept
                if method == "counterfactual":
                    entry = counterfactual_bench(backbone, shape_net, n=args.n, source=source, start="circle",
                                                 target="square", config=config, batch=args.batch,
                                                 out=Path(scratch), quiet=True)  # fmt: skip
                elif method == "neuron":
                    entry = neuron_bench(backbone, shape_net, channels=channels, samples=args.samples,
                                         seed=args.noise_seed, config=config, out=Path(scratch),
                                         quiet=True)  # fmt: skip
                else:
                    spurious = load_extractor("world:spurious-net", device="cpu")
                    entry = difference_bench(backbone, shape_net, spurious, samples=args.samples,
                                             seed=args.noise_seed, config=config, out=Path(scratch),
                                             quiet=True)  # fmt: skip
            line = {"split": "tuning", "noise_seed": args.noise_seed, "scale": scale, "method": method,
                    "latent_lr": config.latent_lr, "cond_lr": config.cond_lr, "uncond_lr": config.uncond_lr,
                    "seconds": round(time.time() - tic, 1), **entry}  # fmt: skip
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            print(
                json.dumps({k: v for k, v in line.items() if k not in ("per_channel", "per_class")})[:600], flush=True
            )


if __name__ == "__main__":
    main()
