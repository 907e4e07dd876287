"""Reconstruction: feature maps -> images with a trained FeatInv model, batched and seeded (the core: loaded
models and tensors in, a ``ReconstructionResult`` out; run folders are written by ``featinv.jobs``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from featscope.backbones import Backbone
from featscope.devices import generators_for
from featscope.extractors import Extractor, load_extractor
from featscope.featinv.config import SampleSettings
from featscope.featinv.data import square
from featscope.featinv.model import FeatInvModel, backbone_of, check_backbone, check_extractor, grid_channels
from featscope.featinv.sampling import sample


@dataclass
class ReconstructionResult:
    """Images sampled from a batch of feature maps."""

    images: torch.Tensor  # (N, 3, H, W) in [0, 1], on the CPU
    features: torch.Tensor  # (N, ...) the maps they were sampled from, in the model's layout
    seeds: list[int]  # image i's seed


def model_device(model: FeatInvModel) -> torch.device:
    """The device the model's weights are on."""
    return next(model.parameters()).device


def load_parts(
    model: FeatInvModel,
    dtype: torch.dtype = torch.float32,
    *,
    backbone: Backbone | None = None,
    extractor: Extractor | None = None,
) -> tuple[Backbone, Extractor]:
    """The backbone and the extractor named in the model's config, on the model's device (those given are kept)."""
    device = model_device(model)
    if backbone is None:
        backbone = backbone_of(model.config, device=device, dtype=dtype)
    if extractor is None:
        extractor = load_extractor(model.config.extractor, weights=model.config.extractor_weights, device=device)
    return backbone, extractor


@torch.no_grad()
def encode(model: FeatInvModel, images: torch.Tensor, extractor: Extractor | None = None) -> torch.Tensor:
    """The feature maps the model conditions on, of images (B, 3, H, W) in [0, 1] (centre-cropped square)."""
    if extractor is None:
        extractor = load_extractor(model.config.extractor, weights=model.config.extractor_weights)
        extractor = extractor.to(model_device(model))
    check_extractor(model, extractor)
    images = square(images.to(extractor.mean.device).float(), model.config.image_size)
    return extractor.target_features(images).float()


def reconstruct(
    model: FeatInvModel,
    features: torch.Tensor,
    *,
    backbone: Backbone | None = None,
    settings: SampleSettings | None = None,
    seeds: list[int] | None = None,
    quiet: bool = True,
) -> ReconstructionResult:
    """Images (N, 3, H, W) in [0, 1] from feature maps (N, ...) or one map; sample i uses ``seeds[i]``
    (default ``settings.seed + i``, or ``settings.seed`` for all with ``same_seed``), so results do not depend
    on the batch size. The backbone named in the model's config is loaded when none is given; images are
    turned into maps with ``encode``."""
    settings = settings or SampleSettings()
    settings.validate()
    features = grid_channels(features.float(), model, "given")
    if backbone is None:
        backbone = backbone_of(model.config, device=model_device(model))
    check_backbone(model, backbone)
    model.to(backbone.device).eval()
    if seeds is None:
        seeds = [settings.seed + (0 if settings.same_seed else i) for i in range(len(features))]
    step = settings.batch_size or len(features)
    images = []
    for start in range(0, len(features), step):
        chunk = features[start : start + step]
        images.append(
            sample(
                model,
                backbone,
                chunk,
                generators_for(seeds[start : start + step], backbone.device),
                num_steps=settings.num_steps,
                guidance_scale=settings.guidance_scale,
                conditioning_scale=settings.conditioning_scale,
                prompt=settings.prompt,
                quiet=quiet,
            ).cpu()
        )
    return ReconstructionResult(torch.cat(images), features, seeds)
