"""Pixel-space backbones: diffusers folders (unet/, scheduler/, optional featscope text_encoder/) and world models."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import nn

import featscope.world
from featscope.backbones.base import Backbone
from featscope.backbones.latent import reason
from featscope.errors import FeatscopeError, InputFileError, SpecError, suggest
from featscope.world.text import WorldTextEncoder

UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}
WORLD_MODELS = ("ddpm",)
LAYOUT = "a diffusers folder with unet/ and scheduler/ (optionally text_encoder/ holding a featscope text encoder)"


class WorldPromptEncoder(nn.Module):
    """Captions -> ``WorldTextEncoder`` embeddings (B, L, D)."""

    def __init__(self, encoder: WorldTextEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, prompts: list[str]) -> torch.Tensor:
        return self.encoder.encode(list(prompts))


def load_pixel(folder: str | Path, *, spec: str, dtype: torch.dtype) -> Backbone:
    """``pixel:FOLDER``: a UNet2DModel (unconditional) or a caption-conditioned UNet2DConditionModel."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputFileError(f"{folder} is not a folder; pixel: takes {LAYOUT}")
    for part in ("unet/config.json", "scheduler/scheduler_config.json"):
        if not (folder / part).is_file():
            raise InputFileError(f"{folder} has no {part}; pixel: takes {LAYOUT}")
    try:
        class_name = json.loads((folder / "unet" / "config.json").read_text()).get("_class_name")
        if class_name not in UNET_CLASSES:
            raise FeatscopeError(f"{folder}/unet is a {class_name}; pixel: runs {' or '.join(UNET_CLASSES)}")
        unet = UNET_CLASSES[class_name].from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
        scheduler_config = DDPMScheduler.load_config(folder, subfolder="scheduler")
        text = folder / "text_encoder"
        encoder = WorldTextEncoder.load(text).to(dtype) if text.is_dir() else None
    except FeatscopeError:
        raise
    except Exception as exc:
        raise FeatscopeError(f"cannot load the pixel model in {folder}: {reason(exc)}") from exc
    conditional = isinstance(unet, UNet2DConditionModel)
    if conditional != (encoder is not None):
        raise FeatscopeError(
            f"{folder}: a {class_name} needs {'a' if conditional else 'no'} text_encoder/ "
            "(caption-conditioned models use UNet2DConditionModel and a featscope text encoder)"
        )
    if encoder is not None and encoder.config["dim"] != unet.config.cross_attention_dim:
        raise FeatscopeError(
            f"{folder}: the text encoder's dim {encoder.config['dim']} differs from the unet's "
            f"cross_attention_dim {unet.config.cross_attention_dim}"
        )
    prompt_encoder = WorldPromptEncoder(encoder) if encoder is not None else None
    return Backbone(unet, scheduler_config, spec=spec, prompt_encoder=prompt_encoder)


def world_folder(name: str) -> Path:
    """Where the embedded world model ``name`` lives inside the installed package."""
    return Path(featscope.world.__file__).parent / "weights" / name


def load_world(name: str, *, spec: str, dtype: torch.dtype) -> Backbone:
    """``world:NAME``: the embedded world's pixel model shipped with featscope."""
    known = [f"world:{n}" for n in WORLD_MODELS]
    if name not in WORLD_MODELS:
        raise SpecError(f"unknown world model {name!r}; known: {', '.join(known)}{suggest(f'world:{name}', known)}")
    folder = world_folder(name)
    fix = f"reinstall featscope or retrain it with `featscope world train {name}`"
    if not (folder / "unet").is_dir():
        raise FeatscopeError(f"the embedded world model {name!r} is missing from {folder}; {fix}")
    try:
        return load_pixel(folder, spec=spec, dtype=dtype)
    except FeatscopeError as exc:
        raise FeatscopeError(f"the embedded world model {name!r} is corrupt ({exc}); {fix}") from exc
