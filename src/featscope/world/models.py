"""Architectures of the embedded world's models: a caption-conditioned pixel UNet and small CNNs."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save
from torch import nn

from featscope.errors import FeatscopeError
from featscope.world import CLASSIFIER_TASKS
from featscope.world.patterns import ATTRIBUTES as PATTERN_ATTRIBUTES
from featscope.world.render import IMAGE_SIZE

TEXT_DIM = 64
UNET_CHANNELS = (32, 64, 96)  # the shipped world:ddpm's block widths
_NORM_GROUPS = 16


def check_unet_channels(channels: tuple[int, ...]) -> tuple[int, ...]:
    """``channels`` as a tuple of three block widths, or a FeatscopeError naming what is wrong."""
    channels = tuple(int(c) for c in channels)
    if len(channels) != 3 or any(c <= 0 or c % _NORM_GROUPS for c in channels):
        raise FeatscopeError(
            f"UNet channels {','.join(map(str, channels))} are not three positive multiples of {_NORM_GROUPS} "
            f"(the group-norm groups); pass e.g. {','.join(map(str, UNET_CHANNELS))}"
        )
    return channels


def build_world_unet(channels: tuple[int, ...] = UNET_CHANNELS) -> UNet2DConditionModel:
    """A Stable Diffusion UNet in miniature: pixel space, 32x32, cross-attention on captions;
    ``channels`` are the widths of its three resolution levels (32, 16 and 8 pixels)."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=check_unet_channels(channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=_NORM_GROUPS,
    )


PREDICTION_TYPES = ("epsilon", "v_prediction")
NUM_TRAIN_TIMESTEPS = 1000


def build_world_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """The world model's noise schedule: cosine, 1000 steps; samplers clip x0 to [-1, 1]
    (measured at 3,700 training steps: 50% of unguided samples valid with clipping, 28% without).

    The cosine schedule ends at SNR 2e-9, so sampling must start at t = 999 ("trailing" spacing). There
    an epsilon model's x0 estimate divides by sqrt(abar) = 5e-5 and the image's mean colour is noise;
    a v-prediction model predicts x0 directly there, so v-prediction models sample with trailing
    spacing and epsilon models with leading spacing (which starts at t = 900; at 10 DDIM steps every
    valid sample of the 5,500-step epsilon model came out on the grey background).
    """
    return DDPMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=True,
        variance_type="fixed_small",
        timestep_spacing="trailing" if prediction_type == "v_prediction" else "leading",
    )


class WorldClassifier(nn.Module):
    """A small CNN on ``image_size`` images in [0, 1] (32 or 64: its first block strides by image_size // 32, so
    both cost the same after it); layers ``block1``..``block3``, ``pool``, ``fc``."""

    def __init__(self, num_classes: int, width: int = 32, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "image_size": image_size}

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            )

        self.block1 = block(3, width, image_size // IMAGE_SIZE)
        self.block2 = block(width, 2 * width, 2)
        self.block3 = block(2 * width, 4 * width, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block3(self.block2(self.block1(x)))))

    def save(self, path: str | Path, metadata: dict) -> None:
        from featscope.runs import atomic_write_bytes

        meta = {"config": json.dumps(self.config), **{k: json.dumps(v) for k, v in metadata.items()}}
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(path, save(tensors, metadata=meta))  # an unwritable place: the one-line error


def load_classifier(path: str | Path) -> tuple[WorldClassifier, dict]:
    """Load a saved world classifier and its metadata (labels, accuracies)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    model = WorldClassifier(**meta.pop("config"))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), meta


def labels_of(task: str) -> tuple[str, ...]:
    return PATTERN_ATTRIBUTES[CLASSIFIER_TASKS[task]]
