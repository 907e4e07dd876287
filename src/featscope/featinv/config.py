"""Settings of training, sampling and the embedded world model (light: no model libraries imported)."""

from __future__ import annotations

from dataclasses import dataclass

from featscope.errors import FeatscopeError
from featscope.settings import Settings, knob

MIXED_PRECISION = ("no", "fp16", "bf16")
CROPS = ("random", "center")


@dataclass
class TrainConfig(Settings):
    """Training settings; the defaults are FeatInv's published ones where it states them."""

    steps: int = knob(1000, "total optimiser steps, counting resumed ones", metavar="N")
    epochs: float | None = knob(
        None, "passes over the training images instead of --steps (published: 3 epochs of ImageNet)", metavar="E"
    )
    batch_size: int = knob(8, "images per process and micro-batch (published: 8, one GPU)", metavar="N")
    lr: float = knob(1e-5, "AdamW learning rate, constant")
    weight_decay: float = knob(1e-2, "AdamW weight decay (torch's default, as the published optimiser)", metavar="WD")
    grad_accum: int = knob(1, "gradient accumulation steps", metavar="N")
    drop_prob: float = knob(
        0.15, "share of samples with zero features and empty prompt (dropped together)", metavar="P"
    )
    crop: str = knob(
        "random",
        "random: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) to the network's input size, as published "
        "(features computed on the fly only); center: the centre square",
        choices=CROPS,
    )
    flip: bool = knob(True, "random horizontal and vertical flips (features computed on the fly only)")
    cache_features: bool = knob(
        False, "precompute every image's features once into OUT/features.safetensors (centre crops, no flips)"
    )
    mixed_precision: str = knob("no", "autocast precision of the training steps", choices=MIXED_PRECISION)
    seed: int = knob(0, "data order, dropout and noise")
    checkpoint_every: int = knob(1000, "write OUT/checkpoint.pt every N steps", metavar="N")
    sample_every: int = knob(500, "log samples every N steps; 0 = never", metavar="N")
    sample_images: int = knob(4, "images per logged sample grid", cli=False)
    sample_steps: int = knob(20, "DDIM steps of logged samples", metavar="N")
    feature_batch: int = knob(64, "batch size when caching features", cli=False)

    def validate(self) -> None:
        if self.crop not in CROPS:
            raise FeatscopeError(f"crop {self.crop!r}; use one of {', '.join(CROPS)}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise FeatscopeError(f"mixed precision {self.mixed_precision!r}; use one of {', '.join(MIXED_PRECISION)}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "feature_batch"):
            if getattr(self, name) < 1:
                raise FeatscopeError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.epochs is not None and not self.epochs > 0:
            raise FeatscopeError(f"the number of epochs must be positive, not {self.epochs}")
        if not 0 <= self.drop_prob <= 1:
            raise FeatscopeError(f"the dropout probability must be in [0, 1], not {self.drop_prob}")
        if self.lr <= 0:
            raise FeatscopeError(f"the learning rate must be positive, not {self.lr}")


@dataclass
class SampleSettings(Settings):
    """How reconstructions are sampled; the defaults are FeatInv's published ones."""

    num_steps: int = knob(50, "DDIM steps, eta 0", symbol="T", flag="--steps")
    guidance_scale: float = knob(
        1.75, "CFG w; the negative branch keeps the features and drops the text (1 = off)", symbol="cfg"
    )
    conditioning_scale: float = knob(
        1.0, "control strength: scales every ControlNet residual", flag="--strength", metavar="STRENGTH"
    )
    seed: int = knob(100, "sample i uses seed + i")
    same_seed: bool = knob(False, "every sample uses --seed (the same noise), as the published evaluation")
    batch_size: int | None = knob(None, "images per batch (default: all at once)", metavar="N")
    prompt: str | None = knob(None, "text prompt (default: the prompt the model was trained with)", metavar="TEXT")

    def validate(self) -> None:
        if self.num_steps < 1:
            raise FeatscopeError(f"the number of sampling steps must be at least 1, not {self.num_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise FeatscopeError(f"the batch size must be at least 1, not {self.batch_size}")


@dataclass(frozen=True)
class Preset:
    """What a FeatInv model is built from: a backbone, a network layer at its input size, an adapter width."""

    backbone: str
    extractor: str
    adapter_width: int


# the released FeatInv model: miniSD (256 px, 32x32 latents) conditioned on ConvNeXt-B's last stage at 288 px
PRESETS = {
    "published": Preset(
        "sd:lambdalabs/miniSD-diffusers", "timm:convnext_base.fb_in22k_ft_in1k@stages.3@288px", 512
    ),  # 1024 x 9 x 9 maps
}

WORLD_BACKBONE = "world:ddpm"
WORLD_EXTRACTOR = "world:shape-net@block2"  # (64, 16, 16): after the first downsampling, before the last
WORLD_ADAPTER_WIDTH = 64
WORLD_IMAGES = 20_000
# settings for the small world model (the published 1e-5 suits a 860M-parameter copy; this one has 1.2M); whole
# images, as the shipped model was trained: a random crop would change the shapes' sizes and positions
WORLD_TRAIN = TrainConfig(
    steps=6000,
    batch_size=32,
    lr=1e-4,
    crop="center",
    checkpoint_every=250,
    sample_every=500,
    sample_images=8,
    sample_steps=25,
)
