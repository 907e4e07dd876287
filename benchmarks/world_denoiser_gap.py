"""How far is a world diffusion model's x0 estimate from the Bayes denoiser of its training pool?

    python benchmarks/world_denoiser_gap.py world:ddpm CHECKPOINT.pt ... --times 999 949 900 850 --out FILE.jsonl

256 fresh world images (seed 99) are noised to each time t (noise seed 3) and denoised by each model with
the empty caption; the Bayes denoiser is E[x0 | x_t] over the 30,000-image training pool (PoolPosterior).
Per model and t: the mean squared distance of its x0 estimate to the Bayes one (pixels in [-1, 1]), beside
the Bayes estimate's own distance to the true images. One JSON line per model and t.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.world.posterior import PoolPosterior
from featscope.world.render import generate
from featscope.world.train import export_ddpm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="backbone specs or checkpoint.pt files of `featscope world train`")
    parser.add_argument("--times", nargs="+", type=int, default=[999, 949, 900, 850])
    parser.add_argument("--pool", type=int, default=30000, help="training-pool images (seed 0)")
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    images, records = generate(args.pool, 0)
    posterior = PoolPosterior(to_tensor(images) * 2 - 1, records)
    x0 = to_tensor(generate(256, 99)[0]) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            spec: load_backbone(f"pixel:{export_ddpm(spec, Path(tmp) / str(i))}" if spec.endswith(".pt") else spec)
            for i, spec in enumerate(args.models)
        }
    gen = torch.Generator().manual_seed(3)
    alphas = next(iter(models.values())).alphas_cumprod
    with open(args.out, "a") as handle, torch.no_grad():
        for t in args.times:
            a = alphas[t]
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen)
            bayes = posterior.x0(x_t, a.repeat(len(x0)), [{}] * len(x0))
            for spec, model in models.items():
                estimate = model.x0_from_eps(x_t, t, model.eps(x_t, t, model.encode_prompt([""] * len(x0))))
                record = {
                    "model": spec,
                    "t": t,
                    "mse_to_bayes": float((estimate - bayes).pow(2).mean()),
                    "bayes_mse_to_truth": float((bayes - x0).pow(2).mean()),
                    "pool": args.pool,
                }
                handle.write(json.dumps(record) + "\n")
                print(json.dumps(record))


if __name__ == "__main__":
    main()
