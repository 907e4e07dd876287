"""The loaders behind the world's plugin (``featscope.world.plugin``): the ``world:ddpm`` backbone, the world
classifiers as extractors, and the word-level text encoder of ``pixel:`` folders."""

from __future__ import annotations

from pathlib import Path

import torch

from featscope.backbones.base import Backbone
from featscope.backbones.latent import load_sd
from featscope.backbones.pixel import load_pixel
from featscope.errors import FeatscopeError, InputFileError
from featscope.extractors.base import Extractor
from featscope.extractors.checkpoint import one_line
from featscope.extractors.spec import Spec
from featscope.world import WEIGHTS_DIR
from featscope.world.models import labels_of, load_classifier
from featscope.world.text import WorldPromptEncoder, WorldTextEncoder

DEFAULT_LAYER = "pool"


def world_folder(name: str) -> Path:
    """Where the embedded world model ``name`` lives inside the installed package."""
    return WEIGHTS_DIR / name


def weights_path(name: str) -> Path:
    """The packaged weights file of world classifier ``name``."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_world(name: str, *, spec: str, dtype: torch.dtype) -> Backbone:
    """``world:NAME``: an embedded world diffusion model shipped with featscope; ``world:latent`` is a Stable
    Diffusion 1.x folder and loads through ``sd:``'s code, as a user's checkpoint does."""
    folder = world_folder(name)
    training = "latent-vae and latent-unet" if name == "latent" else name
    fix = f"reinstall featscope or retrain it with `featscope world train {training}`"
    if not (folder / "unet").is_dir():
        raise FeatscopeError(f"the embedded world model {name!r} is missing from {folder}; {fix}")
    try:
        if name == "latent":
            return load_sd(str(folder), spec=spec, dtype=dtype)
        return load_pixel(folder, spec=spec, dtype=dtype)
    except FeatscopeError as exc:
        raise FeatscopeError(f"the embedded world model {name!r} is corrupt ({exc}); {fix}") from exc


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """A world CNN on [0, 1] 32x32 or 64x64 images; default layer ``pool`` (128-d); ``labels`` from its weights file."""
    path = Path(weights).expanduser() if weights is not None else weights_path(spec.name)
    fix = "check the file" if weights is not None else "reinstall featscope or retrain it with `featscope world train`"
    if not path.is_file():
        raise InputFileError(f"world model {spec.name}: weights file {path} is missing; {fix}")
    try:
        network, meta = load_classifier(path)
    except Exception as error:  # any failure to parse means a bad file
        raise InputFileError(f"world model {spec.name}: cannot read {path} ({one_line(error)}); {fix}") from error
    return Extractor(
        network,
        name=spec.base,
        layer=spec.layer or DEFAULT_LAYER,
        input_size=(network.config["image_size"],) * 2,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        labels=meta.get("labels") or labels_of(spec.name),
    )


def load_text_encoder(folder: Path, dtype: torch.dtype) -> WorldPromptEncoder:
    """A ``pixel:`` folder's ``text_encoder/``: a saved ``WorldTextEncoder``."""
    return WorldPromptEncoder(WorldTextEncoder.load(folder).to(dtype))
