"""A picture of a world diffusion model: a row of unconditional samples over a row of captioned ones.

python benchmarks/scripts/world_samples.py world:ddpm --sampler ddpm:50 --out docs/img/world-ddpm-v7250-samples.png
"""

from __future__ import annotations

import argparse

import torch

from featscope.backbones import load_backbone
from featscope.devices import generators_for
from featscope.images import image_grid, save_image
from featscope.sampling import sample

CAPTIONS = [
    "red star",
    "blue circle",
    "large green square",
    "yellow triangle on dark",
    "small cyan cross top-left on light",
    "magenta star on grey",
    "large red circle middle-center on light",
    "blue cross",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="backbone spec, e.g. world:ddpm or pixel:FOLDER")
    parser.add_argument("--sampler", default="ddpm:50", help="KIND:STEPS (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="PNG file")
    args = parser.parse_args()
    kind, steps = args.sampler.split(":")
    backbone = load_backbone(args.model)
    n = len(CAPTIONS)
    device = backbone.device
    seeds = range(args.seed, args.seed + n)
    plain = sample(backbone, generators_for(seeds, device), num_steps=int(steps), sampler=kind)
    gens = generators_for([s + n for s in seeds], device)
    captioned = sample(backbone, gens, prompts=CAPTIONS, num_steps=int(steps), sampler=kind)
    save_image(image_grid(torch.cat([plain, captioned]), columns=n, scale=4), args.out)
    print(f"wrote {args.out}: unconditional (top), captioned {CAPTIONS} (bottom)")


if __name__ == "__main__":
    main()
