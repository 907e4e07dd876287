"""Session fixtures: tiny random-weight diffusion models saved in their real on-disk formats (see tiny_sd.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featscope.backbones import Backbone, load_backbone
from tiny_sd import save_single_file, save_tiny_pixel, save_tiny_sd


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """All tiny model files, written once per session."""
    root = tmp_path_factory.mktemp("tiny_models")
    pipe = save_tiny_sd(root / "sd")
    return {
        "sd": root / "sd",
        "safetensors": save_single_file(pipe, root / "sd-tiny.safetensors"),
        "ckpt": save_single_file(pipe, root / "sd-tiny.ckpt"),
        "pixel": save_tiny_pixel(root / "pixel", conditional=False),
        "pixel_text": save_tiny_pixel(root / "pixel-text", conditional=True),
    }


@pytest.fixture(scope="session")
def tiny_sd_folder(tiny_models) -> Path:
    """A diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    return tiny_models["sd"]


@pytest.fixture(scope="session")
def tiny_sd_single_file(tiny_models) -> Path:
    """The same weights as one original-LDM ``.safetensors`` checkpoint (load with ``config=tiny_sd_folder``)."""
    return tiny_models["safetensors"]


@pytest.fixture(scope="session")
def tiny_sd_ckpt(tiny_models) -> Path:
    """The same weights as a Lightning-style ``.ckpt`` (``{"state_dict": ..., "callbacks": ...}``)."""
    return tiny_models["ckpt"]


@pytest.fixture(scope="session")
def tiny_pixel_folder(tiny_models) -> Path:
    """An unconditional pixel model (UNet2DModel, 16 px) in DDPMPipeline's folder layout."""
    return tiny_models["pixel"]


@pytest.fixture(scope="session")
def tiny_pixel_text_folder(tiny_models) -> Path:
    """A caption-conditioned pixel model (UNet2DConditionModel, 16 px) with a featscope text_encoder/."""
    return tiny_models["pixel_text"]


@pytest.fixture(scope="session")
def tiny_sd_backbone(tiny_sd_folder) -> Backbone:
    """A loaded tiny SD Backbone on CPU, shared by the session: do not modify it."""
    return load_backbone(f"sd:{tiny_sd_folder}")


@pytest.fixture(scope="session")
def tiny_pixel_text_backbone(tiny_pixel_text_folder) -> Backbone:
    """A loaded caption-conditioned tiny pixel Backbone on CPU, shared by the session: do not modify it."""
    return load_backbone(f"pixel:{tiny_pixel_text_folder}")


@pytest.fixture(scope="session")
def target_png(tmp_path_factory) -> Path:
    """A 16x16 noise image to decode."""
    path = tmp_path_factory.mktemp("targets") / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path
