"""Rows that are not featscope's solver: best-of-N, dataset exemplars and the peers (lucent, Horama's MACO,
Fourier and Feature Accentuation), each producing one image per target for the bench to score like every other
row."""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featscope.backbones.base import Backbone
from featscope.bench import peers
from featscope.bench.baselines import (
    SAMPLE_SEED_OFFSET,
    exemplar_pool,
    features_in_batches,
    keep_nearest,
    unguided_samples,
)
from featscope.bench.targets import TargetSource
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.images import to_tensor
from featscope.solvers.configs import UniversalConfig

COMPARISONS = ("best-of-n", "exemplars", "lucent", "maco", "fourier", "accentuation")


@dataclass(frozen=True)
class Comparison:
    """A row that is not featscope's solver: a baseline or a peer method."""

    name: str
    settings: dict
    preset: None = None
    guided: bool = False

    @property
    def label(self) -> str:
        return self.name

    @property
    def slug(self) -> str:
        return self.name


def check_comparisons(names: list[str]) -> tuple[list[str], list[str]]:
    """The rows that can run and a one-line note per peer row whose package is missing; unknown names fail."""
    unknown = [name for name in names if name not in COMPARISONS]
    if unknown:
        raise FeatscopeError(f"unknown comparison row {unknown[0]!r}; use any of {', '.join(COMPARISONS)}")
    notes = {name: peers.missing_note(name) for name in names if name in peers.PACKAGES}
    return [name for name in dict.fromkeys(names) if not notes.get(name)], [note for note in notes.values() if note]


@dataclass
class Shared:
    """What the comparison rows share across extractors: best-of-N's samples and the exemplar pool, made once.

    Best-of-N samples with the first row's sampler and steps, N = the network evaluations per image of the first
    row (259 for ``fast``), one per sample. Seconds are those of one target on its own (all N samples, the whole
    pool's features)."""

    backbone: Backbone
    source: TargetSource
    targets: np.ndarray
    config: UniversalConfig
    best_of: int = 0  # set from the first row's cost before any comparison row runs
    cache: dict = field(default_factory=dict)

    def samples(self) -> tuple[np.ndarray, float]:
        """Best-of-N's N unguided samples and the seconds they took."""
        if "samples" not in self.cache:
            tic, first = time.perf_counter(), self.source.noise_seed + SAMPLE_SEED_OFFSET
            config = self.config
            images = unguided_samples(
                self.backbone, self.best_of, first, sampler=config.sampler, num_steps=config.num_steps
            )
            self.cache["samples"] = images, time.perf_counter() - tic
        return self.cache["samples"]

    def starts(self, n: int) -> tuple[torch.Tensor, float]:
        """Feature Accentuation's seed images: the plain sample (the first row's sampler and steps, no guidance) of
        each target's decode seed, (n, 3, H, W) in [0, 1], and the seconds per image they took."""
        if "starts" not in self.cache:
            tic, config = time.perf_counter(), self.config
            images = unguided_samples(self.backbone, n, self.source.noise_seed, sampler=config.sampler,
                                      num_steps=config.num_steps)  # fmt: skip
            self.cache["starts"] = to_tensor(images), (time.perf_counter() - tic) / n
        return self.cache["starts"]

    def pool(self) -> tuple[np.ndarray, str]:
        """The exemplar pool (held-out world images, no target) and its description."""
        if "pool" not in self.cache:
            self.cache["pool"] = exemplar_pool(self.source, self.targets)
        return self.cache["pool"]


def comparison_settings(name: str, shared: Shared) -> dict:
    """What results.json records about a comparison row."""
    if name == "best-of-n":
        first, n = shared.source.noise_seed + SAMPLE_SEED_OFFSET, shared.best_of
        return {"samples": n, "sampler": shared.config.sampler, "num_steps": shared.config.num_steps,
                "seeds": f"{first}..{first + n - 1}, the same for every target"}  # fmt: skip
    if name == "exemplars":
        return {"pool": shared.pool()[1]}
    settings = peers.settings_of(name)
    if name == "maco":
        settings["spectrum"] = f"mean decorrelated magnitude spectrum of the exemplar pool, {shared.pool()[1]}"
    if name == "accentuation":
        settings["seed_image"] = (f"the plain {shared.config.sampler}-{shared.config.num_steps} sample of the "
                                  "target's decode seed")  # fmt: skip
    return settings


def run_comparison(
    name: str, shared: Shared, extractor: Extractor, target_features: torch.Tensor, folder: Path
) -> tuple[np.ndarray, dict, float]:
    """One image per target (uint8), the cost per image and the seconds per image of comparison row ``name``.

    ``folder`` receives MACO's spectrum file."""
    n, tic = len(target_features), time.perf_counter()
    if name == "best-of-n":
        samples, seconds = shared.samples()
        tic = time.perf_counter()  # the samples' seconds are counted once, whichever row made them
        images = keep_nearest(samples, extractor, target_features)
        n_samples = shared.best_of
        return images, cost(n_samples, n_samples * shared.config.num_steps), seconds + time.perf_counter() - tic
    if name == "exemplars":
        pool, _ = shared.pool()
        features_in_batches(extractor, pool[:1])  # warm the network so the timing is the pool's
        tic = time.perf_counter()
        images = keep_nearest(pool, extractor, target_features)
        return images, cost(len(pool), 0), time.perf_counter() - tic
    seed, unet, start_seconds = shared.source.noise_seed, 0, 0.0
    starts = None
    if name == "accentuation":
        starts, start_seconds = shared.starts(n)
        unet, tic = shared.config.num_steps, time.perf_counter()  # the seed images' seconds are counted once
    with contextlib.redirect_stderr(io.StringIO()):  # Horama's progress bars
        if name == "lucent":
            images, evaluations = peers.lucent_invert(extractor, target_features, seed)
        else:
            spectrum = peers.maco_spectrum(shared.pool()[0])
            images, evaluations = peers.horama_invert(name, extractor, target_features, seed, spectrum, folder,
                                                      starts=starts)  # fmt: skip
    return images, cost(evaluations, unet), start_seconds + (time.perf_counter() - tic) / n


def cost(evaluations: int, unet: int) -> dict:
    """The cost per image as the bench records it."""
    return {"network_evaluations": evaluations, "unet_equivalents": unet}
