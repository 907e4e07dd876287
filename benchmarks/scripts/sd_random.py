"""Stable Diffusion v1.x-sized backbones with random weights: the same cost as the real ones."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from featscope.backbones.base import Backbone


class _TokenFreePrompts(torch.nn.Module):
    """Prompt encoder of a random CLIP text model: a fixed token sequence (cost of the real one)."""

    def __init__(self, text_model: CLIPTextModel) -> None:
        super().__init__()
        self.text_model = text_model

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), 77, dtype=torch.long, device=self.text_model.device)
        return self.text_model(ids).last_hidden_state


def random_sd_v1(resolution: int = 512) -> Backbone:
    """SD v1.4's UNet (860M), VAE and CLIP ViT-L/14 text tower architectures, randomly initialised."""
    unet = UNet2DConditionModel(
        sample_size=resolution // 8,
        cross_attention_dim=768,
        attention_head_dim=8,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
        )
    )
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    return Backbone(
        unet,
        dict(scheduler.config),
        spec="random:sd-v1",
        vae=vae,
        vae_scale=0.18215,
        prompt_encoder=_TokenFreePrompts(text),
    )
