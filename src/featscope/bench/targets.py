"""Bench targets: world images from a held-out evaluation split (by default the test split), or from any seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featscope.world.kinds import DEFAULT_KIND, scene_kind
from featscope.world.render import WorldRecord
from featscope.world.splits import split_images

DEFAULT_SPLIT = "test"


@dataclass(frozen=True)
class TargetSource:
    """Where a bench's targets come from: an evaluation ``split`` (docs/evaluation.md) or a ``seed``'s stream, of
    the scene ``kind`` (``world.kinds``).

    ``noise_seed`` is the first seed of the decoding noise (target i uses ``noise_seed + i``): the stream's seed,
    or 0 for a split."""

    split: str | None = DEFAULT_SPLIT
    seed: int | None = None
    kind: str = DEFAULT_KIND

    @property
    def noise_seed(self) -> int:
        return self.seed if self.seed is not None else 0

    def record(self) -> dict:
        """What results.json says about the targets."""
        if self.seed is not None:
            return {"split": None, "seed": self.seed, "kind": self.kind}
        return {"split": self.split, "seed": None, "kind": self.kind}

    def images(self, n: int, **fixed: str) -> tuple[np.ndarray, list[WorldRecord]]:
        """``n`` target images (n, size, size, 3) uint8 of the kind and their records; ``fixed`` attributes
        (``shape="circle"``) select from a split, or are drawn so from a seed's stream."""
        if self.seed is not None:
            return scene_kind(self.kind).generate(n, self.seed, **fixed)
        return split_images(n, self.split, kind=self.kind, **fixed)
