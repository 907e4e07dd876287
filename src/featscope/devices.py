"""Device and dtype choice, and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from featscope.errors import FeatscopeError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FeatscopeError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FeatscopeError(f"device {name!r} asked for but CUDA is not available; use --device cpu")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise FeatscopeError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generators_for(seeds: list[int], device: torch.device) -> list[torch.Generator]:
    """One generator per sample, so that a sample's noise does not depend on the batch it is in."""
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    return [torch.Generator(gen_device).manual_seed(int(s)) for s in seeds]


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory: CUDA allocator peak on GPU, the process's max resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
