"""Training and input images from the embedded world (``--world N``): an ``ImageSource`` for FeatInv's training
and jobs. The FeatInv core does not import it (nor the world)."""

from __future__ import annotations

import torch

from featscope.errors import FeatscopeError
from featscope.featinv.data import random_crop, square
from featscope.images import to_tensor
from featscope.world.render import generate


class WorldImages:
    """``n`` world images drawn from ``seed`` (kept in memory), as centre squares or random crops of ``size``."""

    def __init__(self, n: int, seed: int, size: int) -> None:
        if n < 1:
            raise FeatscopeError(f"the number of world images must be positive, not {n}")
        self.n, self.seed, self.size = n, seed, size
        self.pool = to_tensor(generate(n, seed)[0])

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> str:
        return f"world:{self.n}:{self.seed}"

    def load(self, indices: list[int]) -> torch.Tensor:
        return square(self.pool[indices], self.size)

    def crops(self, indices: list[int], seeds: list[int]) -> torch.Tensor:
        return torch.cat([random_crop(self.pool[i : i + 1], self.size, s) for i, s in zip(indices, seeds, strict=True)])
