"""Inputs of reconstruction, evaluation and steering: image files, saved feature maps, or world images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from featscope.errors import FeatscopeError, SpecError
from featscope.extractors import Extractor, Spec, parse_spec
from featscope.extractors.spec import size_suffix
from featscope.featinv.data import square
from featscope.featinv.model import FeatInvModel, grid_channels
from featscope.featinv.world_images import WorldImages
from featscope.images import load_image
from featscope.targets import TENSOR_SUFFIXES, load_feature_file


@dataclass
class Inputs:
    """Feature maps (N, ...), a name per row, and the source images (N, 3, S, S) when all rows are images."""

    features: torch.Tensor
    names: list[str]
    images: torch.Tensor | None


def _check_metadata(path: Path, model: FeatInvModel) -> None:
    """Refuse a .safetensors feature file whose metadata names another network or layer than the model's."""
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata() or {}
    if "extractor" not in meta:
        return
    try:
        spec = parse_spec(meta["extractor"])
    except SpecError:
        spec = Spec("file", meta["extractor"].partition("@")[0])
    layer = meta.get("layer") or spec.layer
    theirs = f"{spec.base}@{layer}{size_suffix(spec.size)}"
    if theirs != model.config.extractor:
        raise FeatscopeError(
            f"feature file {path} holds features of {theirs}, but the model was trained on "
            f"{model.config.extractor}; encode the image with that network, layer and input size"
        )


def read_inputs(
    model: FeatInvModel,
    extractor: Extractor,
    files: list[str | Path] = (),
    world: int | None = None,
    world_seed: int = 10_000,
) -> Inputs:
    """Feature maps of image files (encoded by ``extractor``), of feature files, and of ``world`` world images."""
    rows, names, images = [], [], []
    size = model.config.image_size
    device = extractor.mean.device
    for file in files:
        path = Path(file)
        if path.suffix.lower() in TENSOR_SUFFIXES:
            if path.suffix.lower() == ".safetensors" and path.is_file():
                _check_metadata(path, model)
            feats = grid_channels(load_feature_file(path), model, repr(str(path)))
            rows.append(feats)
            names += [path.stem] if len(feats) == 1 else [f"{path.stem}_{j}" for j in range(len(feats))]
            images += [None] * len(feats)
        else:
            image = square(load_image(path), size)
            rows.append(extractor.target_features(image.to(device)).float().cpu())
            names.append(path.stem)
            images.append(image[0])
    if world:
        pool = WorldImages(world, world_seed, size).load(list(range(world)))
        rows.append(extractor.target_features(pool.to(device)).float().cpu())
        names += [f"world_{world_seed}_{j:05d}" for j in range(world)]
        images += list(pool)
    if not rows:
        raise FeatscopeError("no input given; pass image files, feature files (.pt/.safetensors/.npy) or --world N")
    have_images = all(image is not None for image in images)
    return Inputs(torch.cat(rows), names, torch.stack(images) if have_images else None)
