"""Stable Diffusion backbones with random weights (the same cost as the real ones), and tiny stand-ins.

``random_sd("v1", 512)``: SD v1.4's UNet (860M), VAE and CLIP ViT-L/14 text tower architectures; at 256 px
the same architecture is miniSD's. ``random_sd("tiny", 32)``: a few-thousand-parameter pipeline of the same
classes (2x VAE), for running benchmark code paths on a CPU in seconds. ``tiny_classifier`` is a tiny network under
study, loadable as ``benchmarks/scripts/sd_random.py:tiny_classifier`` (layers ``features``, ``fc``).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from featscope.backbones.base import Backbone

SIZES = {
    "v1": {
        "unet": {"block_out_channels": (320, 640, 1280, 1280), "attention_head_dim": 8, "cross_attention_dim": 768},
        "vae": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    },
    "tiny": {
        "unet": {
            "block_out_channels": (8, 16),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "attention_head_dim": 2,
            "cross_attention_dim": 16,
            "norm_num_groups": 4,
            "layers_per_block": 1,
        },
        "vae": {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4},
        "text": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
    },
}


class _TokenFreePrompts(nn.Module):
    """Prompt encoder of a random CLIP text model: a fixed token sequence (cost of the real one)."""

    def __init__(self, text_model: CLIPTextModel) -> None:
        super().__init__()
        self.text_model = text_model

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), 77, dtype=torch.long, device=self.text_model.device)
        return self.text_model(ids).last_hidden_state


def random_sd(size: str = "v1", resolution: int = 512) -> Backbone:
    """A randomly initialised SD 1.x-style backbone (``size`` ``v1`` or ``tiny``) at ``resolution`` px."""
    parts = SIZES[size]
    levels = len(parts["vae"]["block_out_channels"])
    latent = resolution // 2 ** (levels - 1)
    unet = UNet2DConditionModel(**{"layers_per_block": 2, **parts["unet"], "sample_size": latent})
    vae = AutoencoderKL(
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        **parts["vae"],
    )
    text = CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, **parts["text"]))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return Backbone(
        unet,
        dict(scheduler.config),
        spec=f"random:sd-{size}",
        vae=vae,
        vae_scale=0.18215,
        prompt_encoder=_TokenFreePrompts(text),
    )


def random_sd_v1(resolution: int = 512) -> Backbone:
    """SD v1.4's architectures, randomly initialised."""
    return random_sd("v1", resolution)


def tiny_classifier() -> tuple[nn.Module, dict]:
    """A random 10-class CNN at 32 px: ``features`` (8, 8, 8), then pooled logits ``fc``."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 8, 3, stride=2, padding=1))
    net.add_module("features", nn.Conv2d(8, 8, 3, stride=2, padding=1))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 10))
    return net, {"input_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
