"""FID of reconstructions against the images they came from (torchmetrics' FrechetInceptionDistance).

Inception-v3 (torch-fidelity's weights, as in the usual FID) when torch-fidelity and its weights file are on
this machine (nothing is downloaded); otherwise the network under study's feature maps, mean-pooled.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from featscope.extractors import Extractor
from featscope.featinv.features import to_grid

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's, in torch hub's checkpoints/
CHUNK = 32  # images per feature pass


class PooledFeatures(nn.Module):
    """Images (B, 3, H, W) in [0, 1] -> the network's layer, spatially mean-pooled (B, C): FID's features."""

    def __init__(self, extractor: Extractor, layout: str, channels: int) -> None:
        super().__init__()
        self.extractor, self.layout, self.num_features = extractor, layout, channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return to_grid(self.extractor.target_features(images.float()).float(), self.layout).mean((2, 3))


def inception_weights() -> tuple[Path | None, str]:
    """torch-fidelity's Inception weights file when it and the package are here, else None and why not."""
    if importlib.util.find_spec("torch_fidelity") is None:
        return None, "torch-fidelity is not installed"
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return (path, "") if path.is_file() else (None, f"no {INCEPTION_FILE} in {path.parent}")


def frechet_distance(
    real: torch.Tensor, fake: torch.Tensor, extractor: Extractor, layout: str, channels: int
) -> tuple[float | None, str]:
    """FID between two sets of images (B, 3, H, W) in [0, 1], and a note saying on which features."""
    if min(len(real), len(fake)) < 2:
        return None, "FID n/a: it needs at least 2 images"
    weights, why = inception_weights()
    if weights is not None:
        metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(weights))
        what = "Inception-v3 pool features (2048-d)"
    else:
        metric = FrechetInceptionDistance(feature=PooledFeatures(extractor, layout, channels), normalize=True)
        what = f"{extractor.spec} maps mean-pooled ({channels}-d), not Inception ({why})"
    metric = metric.to(real.device)
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for start in range(0, len(images), CHUNK):
                metric.update(images[start : start + CHUNK].float(), real=is_real)
        value = float(metric.compute())
    return value, f"FID of {len(fake)} reconstructions against their images on {what}"
