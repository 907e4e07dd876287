"""Does a separately trained high-noise model fix a world model's attribute frequencies? (expert screen)

    python benchmarks/world_expert_screen.py world:ddpm --expert DIR/checkpoint.pt --switch 850 --out FILE.jsonl

Samples unconditional DDIM images (the empty caption) whose steps at t >= --switch use the expert's noise
prediction and the rest the base model's (eDiff-I's expert denoisers, two of them). Without --expert
every step uses the base model, the screen's baseline. The oracle reads the samples; one JSON line
(frequency report, settings) is appended to --out. A diagnostic for where an attribute bias comes from,
not a shipped sampler.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from featscope.backbones import load_backbone
from featscope.devices import generators_for
from featscope.images import to_tensor
from featscope.world.oracle import read_batch
from featscope.world.posterior import PoolPosterior
from featscope.world.quality import frequency_report
from featscope.world.render import generate
from featscope.world.train import export_ddpm


class PoolExpert:
    """The Bayes denoiser of the world's training pool (PoolPosterior) in a backbone's eps interface."""

    def __init__(self, size: int, alphas: torch.Tensor) -> None:
        images, records = generate(size, 0)
        self.posterior = PoolPosterior(to_tensor(images) * 2 - 1, records)
        self.alphas = alphas

    def encode_prompt(self, prompts: list[str]) -> list[dict]:
        assert not any(prompts), "the pool expert screens unconditional samples only"
        return [{} for _ in prompts]

    def eps(self, z: torch.Tensor, t: int, kept: list[dict]) -> torch.Tensor:
        a = self.alphas[t]
        x0 = self.posterior.x0(z, a.repeat(len(z)), kept)
        return (z - a.sqrt() * x0) / (1 - a).sqrt()


@torch.no_grad()
def hybrid_samples(base, expert, seeds: list[int], steps: int, switch: int):
    """DDIM samples from noise seeded by ``seeds``: the expert's eps for t >= switch, the base's below."""
    gens = generators_for(seeds, base.device)
    scheduler = base.make_scheduler("ddim", steps)
    conds = {id(m): m.encode_prompt([""] * len(seeds)) for m in (base, expert) if m is not None}
    z = randn_tensor((len(seeds), *base.latent_shape), generator=gens, device=base.device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model = expert if expert is not None and int(t) >= switch else base
        z = scheduler.step(model.eps(z, int(t), conds[id(model)]), t, z, generator=gens).prev_sample
    return base.decode(z).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="backbone spec of the base model, e.g. world:ddpm")
    parser.add_argument("--expert", help="checkpoint.pt of `featscope world train ddpm` for the noisy steps")
    parser.add_argument(
        "--pool-expert", type=int, metavar="N", help="use the Bayes denoiser of N training-pool images as the expert"
    )
    parser.add_argument("--switch", type=int, default=850, help="first timestep the expert takes (default: 850)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="sample i uses seed SEED + i")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    args = parser.parse_args()
    base = load_backbone(args.base)
    expert = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.expert:
            expert = load_backbone(f"pixel:{export_ddpm(args.expert, Path(tmp) / 'expert')}")
    if args.pool_expert:
        expert = PoolExpert(args.pool_expert, base.alphas_cumprod)
    tic = time.time()
    readings = []
    for start in range(args.seed, args.seed + args.n, args.batch):
        seeds = list(range(start, min(start + args.batch, args.seed + args.n)))
        readings += read_batch(hybrid_samples(base, expert, seeds, args.steps, args.switch))
    record = frequency_report(readings) | {
        "base": args.base,
        "expert": args.expert or (f"pool:{args.pool_expert}" if args.pool_expert else None),
        "switch": args.switch if expert is not None else None,
        "steps": args.steps,
        "n": args.n,
        "seed": args.seed,
        "seconds": round(time.time() - tic, 1),
    }
    with open(args.out, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(json.dumps({k: record[k] for k in ("valid_rate", "max_frequency_gap_points")}))
    print("size", record["frequencies"]["size"])


if __name__ == "__main__":
    main()
