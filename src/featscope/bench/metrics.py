"""Image-quality metrics of the benchmarks: pixel-level speckle and background blotches, on uint8 images."""

from __future__ import annotations

import numpy as np
from scipy.stats import binom


def pixel_noise(images: np.ndarray) -> np.ndarray:
    """Per image, the mean of |image - its 3x3 median filter| over pixels and channels (0-255 units).

    ``images`` is (B, H, W, 3) uint8. Flat regions and clean edges score near 0; pixel-level speckle
    (e.g. from optimising the image itself against a network) raises it.
    """
    values = images.astype(np.float32)
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.abs(values - np.median(windows, axis=(-2, -1))).mean(axis=(1, 2, 3))


def background_deviation(images: np.ndarray, object_distance: float = 60.0, margin: int = 2) -> np.ndarray:
    """Per image, the mean |pixel - background colour| (0-255) over the pixels away from the object.

    For images of one object on a flat background (the embedded world): the background colour is the
    median of the 2-pixel frame; pixels further than ``object_distance`` from it (RGB Euclidean) are the
    object, grown by ``margin`` pixels to leave out its anti-aliased edge. A rendered world image scores
    0; speckle and low-frequency blotches both raise it. NaN where no background pixel is left.
    """
    values = images.astype(np.float32)
    frame = np.concatenate(
        [
            values[:, :2].reshape(len(values), -1, 3),
            values[:, -2:].reshape(len(values), -1, 3),
            values[:, :, :2].reshape(len(values), -1, 3),
            values[:, :, -2:].reshape(len(values), -1, 3),
        ],
        axis=1,
    )
    background = np.median(frame, axis=1)[:, None, None, :]
    deviation = np.abs(values - background).mean(-1)
    near_object = np.linalg.norm(values - background, axis=-1) > object_distance
    for _ in range(margin):
        padded = np.pad(near_object, ((0, 0), (1, 1), (1, 1)))
        near_object = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2)).any(axis=(-2, -1))
    kept = (~near_object).sum((1, 2))
    with np.errstate(invalid="ignore"):
        return np.where(kept > 0, (deviation * ~near_object).sum((1, 2)) / kept, np.nan)


def median_interval(values: list[float]) -> dict:
    """Median with its distribution-free 95% interval: the order statistics x_(l), x_(n+1-l) with l the
    2.5% quantile of Binomial(n, 1/2) (at least 1); ``coverage`` is the interval's exact coverage, below 0.95
    only when n < 6. NaN values are dropped first."""
    data = np.sort(np.asarray([v for v in values if v == v], dtype=float))
    n = len(data)
    if n == 0:
        return {"median": None, "low": None, "high": None, "n": 0, "coverage": None}
    low_rank = max(1, int(binom.ppf(0.025, n, 0.5)))
    coverage = 1 - 2 * float(binom.cdf(low_rank - 1, n, 0.5))
    return {
        "median": float(np.median(data)),
        "low": float(data[low_rank - 1]),
        "high": float(data[n - low_rank]),
        "n": n,
        "coverage": round(coverage, 4),
    }
