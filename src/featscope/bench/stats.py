"""The bench's statistics: Wilson intervals, proportions, chance levels and the distance normaliser."""

from __future__ import annotations

import math

import numpy as np
import torch

from featscope.losses import feature_loss
from featscope.world.kinds import DEFAULT_KIND, scene_kind

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when there are no trials."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    shrink = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def proportion(successes: int, total: int) -> dict:
    """A count as rate with its 95% Wilson interval."""
    low, high = wilson_interval(successes, total)
    return {
        "successes": successes,
        "total": total,
        "rate": successes / total if total else 0.0,
        "low": low,
        "high": high,
    }


def chance_levels(kind: str = DEFAULT_KIND) -> dict[str, float]:
    """Agreement of a guess made without the image, per attribute of a scene kind: the share of the value its
    generator draws most often (1 / number of values for a uniform attribute; patterns64's tag: 85% untagged)."""
    scene = scene_kind(kind)
    return {name: max(scene.frequencies(name).values()) for name in scene.attributes}


def median_pair_distance(features: torch.Tensor) -> float:
    """Median squared L2 distance between rows ``i`` and ``i + P`` of ``2P`` features (P random pairs)."""
    pairs = len(features) // 2
    return float(np.median(feature_loss(features[:pairs], features[pairs : 2 * pairs]).numpy()))


def format_proportion(entry: dict) -> str:
    """``92% [85, 96]``: rate and Wilson interval in percent."""
    return f"{100 * entry['rate']:.0f}% [{100 * entry['low']:.0f}, {100 * entry['high']:.0f}]"
