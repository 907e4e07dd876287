"""How good is a world diffusion model? Valid-object rate, attribute frequencies, caption adherence."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from featscope.backbones.base import Backbone
from featscope.devices import generators_for
from featscope.sampling import sample
from featscope.world.oracle import read_batch
from featscope.world.render import ATTRIBUTES, sample_record


def evaluate_world_model(
    backbone: Backbone,
    n: int = 256,
    *,
    seed: int = 0,
    num_steps: int = 50,
    sampler: str = "ddim",
    batch: int = 64,
    guidance_scale: float = 1.0,
) -> dict:
    """Sample ``n`` unconditional and ``n`` captioned images and judge them with the oracle.

    Returns the valid rate, each attribute value's frequency among valid unconditional samples
    with its largest gap to the uniform world frequency (in points), and the caption match rate.
    """
    device = backbone.device
    rng = np.random.default_rng(seed)
    records = [sample_record(rng) for _ in range(n)]
    uncond, captioned = [], []
    for start in range(0, n, batch):
        seeds = list(range(seed + start, seed + min(n, start + batch)))
        gens = generators_for(seeds, device)
        uncond += read_batch(sample(backbone, gens, num_steps=num_steps, sampler=sampler))
        prompts = [r.caption() for r in records[start : start + len(seeds)]]
        gens = generators_for([s + 10**6 for s in seeds], device)
        captioned += read_batch(
            sample(backbone, gens, prompts=prompts, num_steps=num_steps, sampler=sampler, guidance_scale=guidance_scale)
        )
    valid = [r for r in uncond if r.valid]
    frequencies, gaps = {}, {}
    for name, values in ATTRIBUTES.items():
        counts = Counter(getattr(r, name) for r in valid)
        freq = {v: counts[v] / max(1, len(valid)) for v in values}
        frequencies[name] = freq
        gaps[name] = 100 * max(abs(f - 1 / len(values)) for f in freq.values())
    hits = np.array(
        [
            [reading.valid and getattr(reading, k) == getattr(record, k) for k in ATTRIBUTES]
            for record, reading in zip(records, captioned, strict=True)
        ]
    )
    per_attribute = {k: float(hits[:, i].mean()) for i, k in enumerate(ATTRIBUTES)}
    return {
        "samples": n,
        "num_steps": num_steps,
        "guidance_scale": guidance_scale,
        "valid_rate": len(valid) / n,
        "max_frequency_gap_points": gaps,
        "frequencies": frequencies,
        "caption_match_rate": float(hits.all(1).mean()),
        "caption_match_per_attribute": per_attribute,
        "captioned_valid_rate": float(np.mean([r.valid for r in captioned])),
    }


def sample_grid(backbone: Backbone, prompts: list[str], seed: int = 0, num_steps: int = 50) -> torch.Tensor:
    """Samples for a list of prompts (one per prompt), for a quick look."""
    return sample(
        backbone,
        generators_for(list(range(seed, seed + len(prompts))), backbone.device),
        prompts=prompts,
        num_steps=num_steps,
    )
