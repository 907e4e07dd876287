"""Pixel-space backbones: diffusers folders (unet/, scheduler/, optional text_encoder/ read by a plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import nn

from featscope import registry
from featscope.backbones.base import Backbone
from featscope.backbones.latent import reason
from featscope.errors import FeatscopeError, InputFileError

UNET_CLASSES = {"UNet2DModel": UNet2DModel, "UNet2DConditionModel": UNet2DConditionModel}
LAYOUT = "a diffusers folder with unet/ and scheduler/ (optionally text_encoder/ holding a featscope text encoder)"


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
        encoder = load_text_encoder(text, dtype) if text.is_dir() else None
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
    if encoder is not None and encoder.dim != unet.config.cross_attention_dim:
        raise FeatscopeError(
            f"{folder}: the text encoder's dim {encoder.dim} differs from the unet's "
            f"cross_attention_dim {unet.config.cross_attention_dim}"
        )
    return Backbone(unet, scheduler_config, spec=spec, prompt_encoder=encoder)


def load_text_encoder(folder: Path, dtype: torch.dtype) -> nn.Module:
    """The prompt encoder (captions -> (B, L, D)) in ``folder``, read by the plugin that registered one."""
    loader = registry.text_encoder_loader()
    if loader is None:
        raise FeatscopeError(f"{folder}: no featscope plugin reads text encoders; reinstall featscope")
    return loader(folder, dtype)
