"""Targets: what the decoded image's feature should approach (from images, texts or saved tensors)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from featscope.errors import FeatscopeError, InputFileError
from featscope.extractors.base import Extractor
from featscope.images import load_image
from featscope.runs import atomic_torch_save, atomic_write_bytes

TENSOR_SUFFIXES = (".pt", ".pth", ".npy", ".safetensors")
FEATURE_KEY = "feature"


@dataclass
class Targets:
    """Target features (N, ...) with a name per row and, for image targets, the source images."""

    features: torch.Tensor
    names: list[str]
    images: list[torch.Tensor | None] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.features.shape[0]


def feature_shape(extractor: Extractor, image_size: tuple[int, int]) -> tuple[int, ...]:
    """Shape of one feature of ``extractor`` for images of ``image_size``."""
    with torch.no_grad():
        probe = torch.full((1, 3, *image_size), 0.5, device=extractor.mean.device)
        return tuple(extractor(probe).shape[1:])


def load_feature_file(path: str | Path) -> torch.Tensor:
    """Read a saved feature tensor (.pt/.pth/.npy/.safetensors) as float32."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"feature file {str(path)!r} does not exist; check the path")
    try:
        if path.suffix == ".npy":
            tensor = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".safetensors":
            tensors = load_file(str(path))
            tensor = tensors.get(FEATURE_KEY, next(iter(tensors.values()), None))
        else:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any parse failure of a user file is a user mistake
        raise InputFileError(
            f"cannot read feature file {str(path)!r} ({type(error).__name__}); "
            "save it with `featscope encode` or torch.save(tensor)"
        ) from None
    if not torch.is_tensor(tensor):
        raise InputFileError(f"feature file {str(path)!r} holds no tensor; save a single tensor in it")
    return float_feature(tensor, f"feature file {str(path)!r}")


def float_feature(tensor: torch.Tensor, source: str) -> torch.Tensor:
    """``tensor`` as float32; a tensor of integers, booleans or complex numbers is no network feature and is
    refused (``source`` names it in the error)."""
    if not tensor.is_floating_point():
        raise InputFileError(
            f"{source} holds {str(tensor.dtype).removeprefix('torch.')} values, not floating-point features; give "
            "a network's feature (featscope encode saves one)"
        )
    return tensor.float()


def _as_rows(tensor: torch.Tensor, expected: tuple[int, ...], source: str) -> torch.Tensor:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise FeatscopeError(
            f"target tensor {source} holds NaN or infinite values; encode the target again (featscope encode)"
        )
    if tuple(tensor.shape) == expected:
        return tensor[None]
    if tensor.dim() == len(expected) + 1 and tuple(tensor.shape[1:]) == expected:
        return tensor
    raise FeatscopeError(
        f"target tensor {source} has shape {tuple(tensor.shape)} but the network's feature has shape "
        f"{expected} (or (N, *{expected}) for N targets); encode it with the same extractor and layer"
    )


def build_targets(
    extractor: Extractor,
    image_size: tuple[int, int],
    *,
    files: list[str | Path] = (),
    texts: list[str] = (),
    tensors: list[torch.Tensor] = (),
) -> Targets:
    """Target features from image files, feature files (by suffix), texts and in-memory tensors."""
    if not (files or texts or len(tensors)):
        raise FeatscopeError("no target given; pass an image or feature file (--target) or a text (--text)")
    expected = feature_shape(extractor, image_size)
    rows, names, images, kinds = [], [], [], []
    device = extractor.mean.device
    for file in files:
        path = Path(file)
        if path.suffix.lower() in TENSOR_SUFFIXES:
            feats = _as_rows(load_feature_file(path), expected, repr(str(path)))
            rows.append(feats)
            names += [path.stem] * len(feats) if len(feats) == 1 else [f"{path.stem}_{j}" for j in range(len(feats))]
            images += [None] * len(feats)
            kinds += ["tensor"] * len(feats)
        else:
            image = load_image(path)
            _warn_if_resized(extractor, image, path)
            rows.append(extractor.target_features(image.to(device)).float().cpu())
            names.append(path.stem)
            images.append(image[0])
            kinds.append("image")
    if texts:
        text_feats = extractor.encode_text(list(texts)).float().cpu()
        rows.append(_as_rows(text_feats, expected, "from text") if text_feats.dim() > 1 else text_feats[None])
        names += [f"text_{j}" for j in range(len(texts))]
        images += [None] * len(texts)
        kinds += ["text"] * len(texts)
    for j, tensor in enumerate(tensors):
        feats = _as_rows(float_feature(tensor, f"target tensor #{j}").cpu(), expected, f"#{j}")
        rows.append(feats)
        names += [f"tensor_{j}"] * len(feats)
        images += [None] * len(feats)
        kinds += ["tensor"] * len(feats)
    return Targets(torch.cat(rows), names, images, kinds)


def _warn_if_resized(extractor: Extractor, image: torch.Tensor, path: Path) -> None:
    size = tuple(image.shape[-2:])
    if extractor.name.startswith("world:") and extractor.input_size and size != extractor.input_size:
        warnings.warn(
            f"target {str(path)!r} is {size[1]}x{size[0]}; resized to {extractor.input_size[1]}x"
            f"{extractor.input_size[0]} for {extractor.name} (world images are 32x32)",
            stacklevel=3,
        )


def save_feature(feature: torch.Tensor, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save a feature tensor: .safetensors (key ``feature``), .pt or .npy, atomically."""
    path = Path(path)
    feature = feature.detach().float().cpu().contiguous()
    if path.suffix == ".safetensors":
        return atomic_write_bytes(path, save_safetensors({FEATURE_KEY: feature}, metadata=metadata))
    if path.suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, feature.numpy())
        return atomic_write_bytes(path, buffer.getvalue())
    if path.suffix in (".pt", ".pth"):
        return atomic_torch_save(feature, path)
    raise FeatscopeError(f"unknown feature file type {path.suffix!r}; use .safetensors, .pt or .npy")
