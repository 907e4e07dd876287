"""The bench's baselines: best-of-N unguided samples and dataset exemplars, each kept by feature distance."""

from __future__ import annotations

import numpy as np
import torch

from featscope.backbones.base import Backbone
from featscope.bench.targets import TargetSource
from featscope.devices import generators_for
from featscope.extractors.base import Extractor
from featscope.images import to_tensor, to_uint8
from featscope.losses import feature_loss
from featscope.sampling import sample
from featscope.world.splits import EXCLUDED_BY_KIND, SPLIT_STREAM, split_images

SAMPLE_SEED_OFFSET = 2 * 10**6  # best-of-N sample j uses seed noise_seed + this + j: never a decoding seed
FEATURE_BATCH = 256  # images per feature pass


def features_in_batches(extractor: Extractor, images: np.ndarray) -> torch.Tensor:
    """Target-style features (on the CPU) of uint8 images (B, H, W, 3), ``FEATURE_BATCH`` at a time."""
    device = extractor.mean.device
    chunks = [images[i : i + FEATURE_BATCH] for i in range(0, len(images), FEATURE_BATCH)]
    return torch.cat([extractor.target_features(to_tensor(c).to(device)).float().cpu() for c in chunks])


def nearest(candidates: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Per target, the index of the candidate feature nearest it (squared L2) and all distances (T, C)."""
    distances = torch.stack([feature_loss(candidates, t.expand_as(candidates)) for t in targets])
    return distances.argmin(dim=1).numpy(), distances


def unguided_samples(backbone: Backbone, count: int, first_seed: int, *, sampler: str, num_steps: int) -> np.ndarray:
    """``count`` unguided samples of the backbone (uint8), sample j from seed ``first_seed + j``, with ``sample``."""
    images = []
    for start in range(0, count, FEATURE_BATCH):
        seeds = list(range(first_seed + start, first_seed + min(count, start + FEATURE_BATCH)))
        generators = generators_for(seeds, backbone.device)
        images.append(to_uint8(sample(backbone, generators, num_steps=num_steps, sampler=sampler)))
    return np.concatenate(images)


def exemplar_pool(source: TargetSource, targets: np.ndarray) -> tuple[np.ndarray, str]:
    """Held-out world images of the targets' kind that are not targets: the whole evaluation split the targets are
    not drawn from (tuning for test or seeded targets, test for tuning ones), less any image equal to a target; and
    its name."""
    split = "test" if source.seed is None and source.split == "tuning" else "tuning"
    images, _ = split_images(SPLIT_STREAM - len(EXCLUDED_BY_KIND[source.kind][split]), split, kind=source.kind)
    keep = ~(images[:, None] == targets[None]).all(axis=(2, 3, 4)).any(axis=1)
    return images[keep], f"the {split} split ({int(keep.sum())} images)"


def keep_nearest(candidates: np.ndarray, extractor: Extractor, target_features: torch.Tensor) -> np.ndarray:
    """Per target, the candidate image (uint8) whose feature is nearest the target's."""
    index, _ = nearest(features_in_batches(extractor, candidates), target_features)
    return candidates[index]
