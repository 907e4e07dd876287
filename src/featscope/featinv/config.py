"""Settings of training, sampling and the embedded world model (light: no model libraries imported)."""

from __future__ import annotations

from dataclasses import dataclass

from featscope.errors import FeatscopeError

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Training settings; the defaults are FeatInv's published ones where it states them."""

    steps: int = 1000  # total optimiser steps, counting resumed ones
    batch_size: int = 8  # per process and micro-batch (published: 8, one GPU)
    lr: float = 1e-5  # AdamW, constant
    weight_decay: float = 1e-2  # torch's AdamW default, as the published optimiser
    grad_accum: int = 1
    drop_prob: float = 0.15  # feature map zeroed and prompt emptied together
    flip: bool = True  # random horizontal and vertical flips (features computed on the fly only)
    cache_features: bool = False  # precompute every image's features once (RUN/features.safetensors)
    mixed_precision: str = "no"  # no, fp16, bf16
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 500  # 0: never
    sample_images: int = 4
    sample_steps: int = 20
    feature_batch: int = 64  # batch size when caching features

    def validate(self) -> None:
        if self.mixed_precision not in MIXED_PRECISION:
            raise FeatscopeError(f"mixed precision {self.mixed_precision!r}; use one of {', '.join(MIXED_PRECISION)}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "feature_batch"):
            if getattr(self, name) < 1:
                raise FeatscopeError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if not 0 <= self.drop_prob <= 1:
            raise FeatscopeError(f"the dropout probability must be in [0, 1], not {self.drop_prob}")
        if self.lr <= 0:
            raise FeatscopeError(f"the learning rate must be positive, not {self.lr}")


@dataclass
class SampleSettings:
    """How reconstructions are sampled; the defaults are FeatInv's published ones."""

    num_steps: int = 50  # DDIM, eta 0
    guidance_scale: float = 1.75  # the negative branch keeps the features and drops the text
    conditioning_scale: float = 1.0  # control strength: scales every ControlNet residual
    seed: int = 100  # sample i uses seed + i
    batch_size: int | None = None  # None: all at once
    prompt: str | None = None  # None: the prompt the model was trained with

    def validate(self) -> None:
        if self.num_steps < 1:
            raise FeatscopeError(f"the number of sampling steps must be at least 1, not {self.num_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise FeatscopeError(f"the batch size must be at least 1, not {self.batch_size}")


WORLD_BACKBONE = "world:ddpm"
WORLD_EXTRACTOR = "world:shape-net@block2"  # (64, 16, 16): after the first downsampling, before the last
WORLD_ADAPTER_WIDTH = 64
WORLD_IMAGES = 20_000
# settings for the small world model (the published 1e-5 suits a 860M-parameter copy; this one has 1.2M)
WORLD_TRAIN = TrainConfig(
    steps=6000, batch_size=32, lr=1e-4, checkpoint_every=250, sample_every=500, sample_images=8, sample_steps=25
)
