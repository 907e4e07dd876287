"""Unconditional samples of a world diffusion model under DDIM with hand-picked timestep lists.

    python benchmarks/scripts/world_spacing.py --spacings trailing logsnr hybrid8@900 --steps 25 --n 256

diffusers' DDIMScheduler only takes evenly spaced timesteps, so this script runs DDIM (eta 0, x0 clipped
to [-1, 1] as the pixel models' scheduler does) itself, on any decreasing list:
- ``trailing``: diffusers' trailing spacing (999, 959, ... for 25 steps): the library's sampler, as a check;
- ``logsnr``: uniform in log-SNR from t = 999 to t = 0 (dense at both ends);
- ``hybridK@S``: K steps uniform in log-SNR from t = 999 down to t = S, then evenly spaced timesteps below S;
- ``fineN@S``: diffusers' trailing N-step grid at t >= S, then the trailing --steps grid below S (DDIM N where
  sizes are decided, at a fraction of its cost: a screen for DDIM N's attribute frequencies).
Repeated timesteps are dropped, so a list can be shorter than --steps. One JSON line per list on stdout.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from featscope.backbones import load_backbone
from featscope.backbones.base import Backbone
from featscope.devices import generators_for
from featscope.world.oracle import read_batch
from featscope.world.quality import frequency_report


def timesteps(backbone: Backbone, spacing: str, steps: int) -> list[int]:
    """A decreasing timestep list starting at the last training timestep."""
    abar = backbone.alphas_cumprod.double()
    log_snr = torch.log(abar / (1 - abar))
    last = len(log_snr) - 1

    def nearest(levels: np.ndarray) -> list[int]:
        return [int(torch.argmin((log_snr - float(x)).abs())) for x in levels]

    def trailing(n: int) -> list[int]:
        return [int(t) for t in backbone.make_scheduler("ddim", n, spacing="trailing").timesteps]

    if spacing == "trailing":
        chosen = trailing(steps)
    elif spacing.startswith("fine"):
        fine, split = (int(x) for x in spacing[len("fine") :].split("@"))
        chosen = [t for t in trailing(fine) if t >= split] + [t for t in trailing(steps) if t < split]
    elif spacing == "logsnr":
        chosen = nearest(np.linspace(float(log_snr[last]), float(log_snr[0]), steps))
    else:
        high, split = (int(x) for x in spacing[len("hybrid") :].split("@"))
        chosen = nearest(np.linspace(float(log_snr[last]), float(log_snr[split]), high + 1)[:-1])
        chosen += [int(t) for t in np.round(np.linspace(split, 0, steps - high, endpoint=False))]
    kept = [last]
    for t in chosen[1:]:
        if t < kept[-1]:
            kept.append(t)
    return kept


@torch.no_grad()
def ddim_samples(backbone: Backbone, steps: list[int], seeds: list[int], batch: int = 64) -> torch.Tensor:
    """Unconditional DDIM samples in [0, 1] along ``steps``."""
    abar = backbone.alphas_cumprod.float()
    out = []
    for start in range(0, len(seeds), batch):
        gens = generators_for(seeds[start : start + batch], backbone.device)
        z = randn_tensor((len(gens), *backbone.latent_shape), generator=gens, device=backbone.device)
        cond = backbone.encode_prompt([""] * len(gens)) if backbone.has_prompts else None
        for i, t in enumerate(steps):
            eps = backbone.eps(z, t, cond)
            x0 = backbone.x0_from_eps(z, t, eps).clamp(-1, 1)
            eps = (z - abar[t].sqrt() * x0) / (1 - abar[t]).sqrt()
            a_next = abar[steps[i + 1]] if i + 1 < len(steps) else abar[0]  # DDIMScheduler(set_alpha_to_one=False)
            z = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        out.append(backbone.decode(z).clamp(0, 1))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="world:ddpm")
    parser.add_argument("--spacings", nargs="+", default=["trailing", "logsnr"])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--n", type=int, default=256, help="unconditional samples per list")
    args = parser.parse_args()
    for spacing in args.spacings:
        if spacing not in ("trailing", "logsnr") and not re.fullmatch(r"(hybrid|fine)\d+@\d+", spacing):
            parser.error(
                f"unknown spacing {spacing!r}; use trailing, logsnr, hybridK@S (e.g. hybrid8@900) or fineN@S "
                "(e.g. fine250@850)"
            )
    backbone = load_backbone(args.model)
    for spacing in args.spacings:
        steps = timesteps(backbone, spacing, args.steps)
        tic = time.time()
        report = frequency_report(read_batch(ddim_samples(backbone, steps, list(range(args.n)))))
        report.update(spacing=spacing, steps=len(steps), timesteps=steps, n=args.n, seconds=round(time.time() - tic))
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
