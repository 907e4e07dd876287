"""Evaluation: how well reconstructions keep the network's features, predictions and pixels (the core)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from featscope.backbones import Backbone
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor
from featscope.featinv.config import SampleSettings
from featscope.featinv.data import square
from featscope.featinv.fid import frechet_distance
from featscope.featinv.metrics import compare
from featscope.featinv.model import FeatInvModel, check_extractor
from featscope.featinv.reconstruction import encode, load_parts, reconstruct


def summarise(per_image: dict[str, list[float] | None]) -> dict[str, float | None]:
    """Mean of every per-image metric (None stays None: not applicable)."""
    return {k: (statistics.fmean(v) if v else None) for k, v in per_image.items()}


@dataclass
class EvaluationResult:
    """Reconstructions of images from their feature maps, scored against the images."""

    images: torch.Tensor  # (B, 3, H, W) the reconstructions, in [0, 1]
    per_image: dict[str, list[float] | None]  # metric -> one value per image (None: not applicable)
    summary: dict[str, float | None]  # metric -> mean over the images; fid: over the set
    notes: list[str]  # why a metric was skipped, which features FID used


def evaluate(
    model: FeatInvModel,
    images: torch.Tensor,
    *,
    reconstructions: torch.Tensor | None = None,
    backbone: Backbone | None = None,
    extractor: Extractor | None = None,
    settings: SampleSettings | None = None,
    quiet: bool = True,
) -> EvaluationResult:
    """Reconstruct ``images`` (B, 3, H, W) in [0, 1] from their feature maps (unless ``reconstructions`` are
    given) and score them (the backbone and network named in the model's config are loaded when not given).

    Metrics: cosine_median (per-position cosine of the feature maps, median over positions, with the network
    at its input size), cosine_pooled, top1/top5_agreement (classifiers only), mse, ssim, lpips (when available),
    and fid of the reconstructions against the images (summary only; see ``featinv.fid``).
    """
    for name, tensor in (("images", images), ("reconstructions", reconstructions)):
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise FeatscopeError(f"the {name} to evaluate hold NaN or infinite values; give images in [0, 1]")
    backbone, extractor = load_parts(model, backbone=backbone, extractor=extractor)
    check_extractor(model, extractor)
    originals = square(images.float(), model.config.image_size)
    if reconstructions is None:
        features = encode(model, originals, extractor)
        reconstructions = reconstruct(model, features, backbone=backbone, settings=settings, quiet=quiet).images
    device = extractor.mean.device
    reference = square(originals, reconstructions.shape[-1])
    config = model.config
    reference, reconstructions = reference.to(device), reconstructions.to(device)
    per_image, notes = compare(extractor, config.layout, originals.to(device), reference, reconstructions)
    summary = summarise(per_image)
    summary["fid"], note = frechet_distance(reference, reconstructions, extractor, config.layout, config.channels)
    size = "x".join(map(str, extractor.input_size)) if extractor.input_size else "their own size"
    notes += [note, f"cosines: {extractor.spec} maps of both images at {size} px"]
    return EvaluationResult(reconstructions.cpu(), per_image, summary, notes)
