"""Training data: images from a folder (or any ``ImageSource``: the embedded world's are in
``featscope.featinv.world_images``), batches drawn as a function of (seed, step), and the optional feature cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop

from featscope.datasets import IMAGE_SUFFIXES
from featscope.errors import InputFileError
from featscope.extractors import Extractor
from featscope.images import load_image
from featscope.progress import tqdm
from featscope.runs import atomic_write_bytes


def square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (B, 3, H, W) to a square and resize it (antialiased bicubic) to ``size``."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[..., top : top + side, left : left + side]
    if side == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def random_crop(image: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop(size)`` (default scale and ratio, bilinear, antialiased) of one image
    (1, 3, H, W), its crop drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, h, w = RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    return resized_crop(image, top, left, h, w, [size, size], antialias=True).clamp(0, 1)


class ImageSource(Protocol):
    """Training images: ``len`` of them, a ``fingerprint`` naming them (for the feature cache), and a batch of
    them as centre squares (``load``) or seeded random crops (``crops``) of the source's size."""

    def __len__(self) -> int: ...

    def fingerprint(self) -> str: ...

    def load(self, indices: list[int]) -> torch.Tensor: ...

    def crops(self, indices: list[int], seeds: list[int]) -> torch.Tensor: ...


class FolderImages:
    """Every image file under a folder (recursive, sorted), loaded as centre squares or random crops of ``size``."""

    def __init__(self, folder: str | Path, size: int) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise InputFileError(f"training images: {self.folder} is not a folder")
        self.files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputFileError(f"training images: {self.folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        listing = [(str(p.relative_to(self.folder)), p.stat().st_size) for p in self.files]
        return "folder:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]

    def original(self, index: int) -> torch.Tensor:
        return load_image(self.files[index])

    def load(self, indices: list[int]) -> torch.Tensor:
        return torch.cat([square(self.original(i), self.size) for i in indices])

    def crops(self, indices: list[int], seeds: list[int]) -> torch.Tensor:
        return torch.cat([random_crop(self.original(i), self.size, s) for i, s in zip(indices, seeds, strict=True)])


@dataclass
class MicroBatch:
    """What one process draws for one micro-batch of one step: a function of (seed, step, micro, rank) only."""

    indices: list[int]
    drop: torch.Tensor  # (B,) bool: feature map zeroed and prompt emptied together
    hflip: torch.Tensor
    vflip: torch.Tensor
    generator: torch.Generator  # timesteps and noise
    crop_seeds: list[int] | None = None  # one random crop per image (None: centre squares)


def draw(
    seed: int,
    step: int,
    micro: int,
    rank: int,
    n: int,
    batch_size: int,
    drop_prob: float,
    flip: bool,
    crop: bool = False,
) -> MicroBatch:
    rng = np.random.default_rng([seed, step, micro, rank])
    indices = rng.choice(n, batch_size, replace=n < batch_size).tolist()
    drop = torch.from_numpy(rng.random(batch_size) < drop_prob)
    flips = torch.from_numpy(rng.random((2, batch_size)) < 0.5) & flip
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    crops = rng.integers(2**62, size=batch_size).tolist() if crop else None
    return MicroBatch(indices, drop, flips[0], flips[1], generator, crops)


def flipped(images: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor) -> torch.Tensor:
    """Flip images left-right and upside-down where the masks say so."""
    h, v = hflip.view(-1, 1, 1, 1).to(images.device), vflip.view(-1, 1, 1, 1).to(images.device)
    images = torch.where(h, images.flip(-1), images)
    return torch.where(v, images.flip(-2), images)


@torch.no_grad()
def encode_all(source: ImageSource, extractor: Extractor, batch_size: int, quiet: bool) -> torch.Tensor:
    """The extractor's features (N, ...) of every image of ``source``, in batches, on the CPU."""
    rows = []
    device = extractor.mean.device
    for start in tqdm(range(0, len(source), batch_size), disable=quiet, desc="featinv cache features"):
        images = source.load(list(range(start, min(start + batch_size, len(source))))).to(device)
        rows.append(extractor.target_features(images).float().cpu())
    return torch.cat(rows).contiguous()  # the layout a reloaded cache has: resumed runs see identical tensors


def feature_cache(path: Path, source: ImageSource, extractor: Extractor, batch_size: int, quiet: bool) -> torch.Tensor:
    """The cached features of ``source`` at ``path`` (safetensors), computed and written when absent or stale."""
    meta = {"source": source.fingerprint(), "extractor": extractor.spec}
    if path.is_file():
        with safe_open(str(path), "pt") as handle:
            fresh = handle.metadata() == meta
        if fresh:
            return load_file(str(path))["features"]
    features = encode_all(source, extractor, batch_size, quiet)
    atomic_write_bytes(path, save_safetensors({"features": features.contiguous()}, metadata=meta))
    return features
