"""Bench targets: world images from a held-out evaluation split (by default the test split), or from any seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featscope.world.render import WorldRecord, generate
from featscope.world.splits import split_images

DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class TargetSource:
    """Where a bench's targets come from: an evaluation ``split`` (docs/evaluation.md) or a ``seed``'s stream.

    ``noise_seed`` is the first seed of the decoding noise (target i uses ``noise_seed + i``): the stream's seed,
    or 0 for a split."""

    split: str | None = DEFAULT_SPLIT
    seed: int | None = None

    @property
    def noise_seed(self) -> int:
        return self.seed if self.seed is not None else 0

    def record(self) -> dict:
        """What results.json says about the targets."""
        if self.seed is not None:
            return {"split": None, "seed": self.seed}
        return {"split": self.split, "seed": None}

    def images(self, n: int, **fixed: str) -> tuple[np.ndarray, list[WorldRecord]]:
        """``n`` target images (n, 32, 32, 3) uint8 and their records; ``fixed`` attributes (``shape="circle"``)
        select from a split, or are drawn so from a seed's stream."""
        if self.seed is not None:
            return generate(n, self.seed, **fixed)
        return split_images(n, self.split, **fixed)
