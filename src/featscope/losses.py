"""Per-sample distances between features (any shape: vectors, maps, token sequences)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_loss(features: torch.Tensor, target: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Distance per sample (B,): ``l2`` = squared Euclidean (the published loss), ``cosine`` = 1 - cos."""
    x, y = features.flatten(1).float(), target.flatten(1).float()
    if kind == "l2":
        return (x - y).pow(2).sum(1)
    if kind == "cosine":
        return 1 - F.cosine_similarity(x, y, dim=1)
    raise ValueError(f"unknown feature loss {kind!r}")


def feature_cosine(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per sample (B,) between flattened features."""
    return F.cosine_similarity(features.flatten(1).float(), target.flatten(1).float(), dim=1)
