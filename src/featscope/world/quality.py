"""How good is a world diffusion model? Valid-object rate, attribute frequencies, caption adherence."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from featscope.backbones.base import Backbone
from featscope.devices import generators_for
from featscope.sampling import sample
from featscope.world.kinds import DEFAULT_KIND, scene_kind
from featscope.world.oracle import OracleReading, agreement
from featscope.world.splits import split_records


def evaluate_world_model(
    backbone: Backbone,
    n: int = 256,
    *,
    seed: int = 0,
    num_steps: int = 50,
    sampler: str = "ddim",
    batch: int = 64,
    guidance_scale: float = 1.0,
    n_captioned: int | None = None,
    kind: str = DEFAULT_KIND,
    split: str | None = None,
) -> dict:
    """Sample ``n`` unconditional and ``n_captioned`` (default ``n``) captioned images of a scene ``kind`` and
    judge them with its oracle.

    The captions are those of the evaluation ``split``'s first records (``tuning`` or ``test``), or, without
    one, of records drawn from ``seed``. Returns :func:`frequency_report` of the unconditional samples and the
    captioned samples' match rate (every attribute as in the caption), overall and per attribute.
    """
    device = backbone.device
    scene = scene_kind(kind)
    read_batch, attributes = scene.read_batch, scene.attributes
    n_captioned = n if n_captioned is None else n_captioned
    if split is not None:
        records = split_records(n_captioned, split, kind)
    else:
        rng = np.random.default_rng(seed)
        records = [scene.sample(rng) for _ in range(n_captioned)]

    def readings(seeds: list[int], prompts: list[str] | None = None, **kwargs) -> list:
        out = []
        for start in range(0, len(seeds), batch):
            part = prompts[start : start + batch] if prompts is not None else None
            gens = generators_for(seeds[start : start + batch], device)
            out += read_batch(sample(backbone, gens, prompts=part, num_steps=num_steps, sampler=sampler, **kwargs))
        return out

    uncond = readings(list(range(seed, seed + n)))
    captioned = readings(
        [seed + i + 10**6 for i in range(n_captioned)], [r.caption() for r in records], guidance_scale=guidance_scale
    )
    hits = np.array(
        [
            [agreement(record.attributes(), reading)[k] for k in attributes]
            for record, reading in zip(records, captioned, strict=True)
        ],
        dtype=bool,
    ).reshape(-1, len(attributes))
    per_attribute = {k: float(hits[:, i].mean()) if len(hits) else None for i, k in enumerate(attributes)}
    return {
        "samples": n,
        "captioned_samples": n_captioned,
        "num_steps": num_steps,
        "guidance_scale": guidance_scale,
        "kind": scene.name,
        "split": split,
        **frequency_report(uncond, kind),
        "caption_match_rate": float(hits.all(1).mean()) if len(hits) else None,
        "caption_match_per_attribute": per_attribute,
        "captioned_valid_rate": float(np.mean([r.valid for r in captioned])) if captioned else None,
    }


def frequency_report(readings: list[OracleReading], kind: str = DEFAULT_KIND) -> dict:
    """Valid rate and, among the valid readings, each attribute value's frequency, the largest gap to the
    generator's frequency per attribute (points), and 1.96 standard errors of one value's frequency
    at this many samples (the gap sampling noise alone reaches 1 time in 20, per value)."""
    scene = scene_kind(kind)
    valid = [r for r in readings if r.valid]
    frequencies, gaps, noise = {}, {}, {}
    for name, values in scene.attributes.items():
        counts = Counter(getattr(r, name) for r in valid)
        frequencies[name] = {v: counts[v] / max(1, len(valid)) for v in values}
        expected = scene.frequencies(name)
        gaps[name] = 100 * max(abs(f - expected[v]) for v, f in frequencies[name].items())
        p = max(expected.values())
        noise[name] = 100 * 1.96 * float(np.sqrt(p * (1 - p) / max(1, len(valid))))
    return {
        "valid_rate": len(valid) / max(1, len(readings)),
        "max_frequency_gap_points": gaps,
        "sampling_noise_gap_points": noise,
        "frequencies": frequencies,
    }


def sample_grid(backbone: Backbone, prompts: list[str], seed: int = 0, num_steps: int = 50) -> torch.Tensor:
    """Samples for a list of prompts (one per prompt), for a quick look."""
    return sample(
        backbone,
        generators_for(list(range(seed, seed + len(prompts))), backbone.device),
        prompts=prompts,
        num_steps=num_steps,
    )
