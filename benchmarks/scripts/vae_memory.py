"""Peak memory (CPU RSS) of SD v1.4's VAE decoder, forward and backward, at 512 px, by checkpointing mode.

    python benchmarks/scripts/vae_memory.py none|diffusers|layers|nested [--json FILE]

``diffusers``: diffusers' per-block checkpointing; ``layers``: featscope's per-layer checkpointing
(``featscope.speed.checkpoint_layers``); ``nested``: both, which is what ``--low-memory`` does. Run each mode in
its own process: the process's peak RSS is the measure.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from featscope.speed import VAE_LAYERS, checkpoint_layers


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["none", "diffusers", "layers", "nested"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
    ).requires_grad_(False)
    if args.mode in ("diffusers", "nested"):
        vae.enable_gradient_checkpointing()
    if args.mode in ("layers", "nested"):
        checkpoint_layers(vae, VAE_LAYERS)
    z = torch.randn(1, 4, 64, 64, requires_grad=True)
    before, tic = peak_mb(), time.perf_counter()
    vae.decode(z).sample.square().sum().backward()
    result = {
        "vae": "SD v1.4 architecture, random weights",
        "resolution": 512,
        "mode": args.mode,
        "peak_rss_mb": round(peak_mb(), 1),
        "peak_above_models_mb": round(peak_mb() - before, 1),
        "seconds": round(time.perf_counter() - tic, 1),
        "threads": args.threads,
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    if args.json:
        with args.json.open("a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
