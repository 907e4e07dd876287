"""The embedded FeatInv model: a ControlNet for world:shape-net's mid-level map on world:ddpm, shipped with
featscope in ``featscope/world/weights/featinv-shape-net/``."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import torch

from featscope.errors import FeatscopeError
from featscope.featinv.config import (
    WORLD_ADAPTER_WIDTH,
    WORLD_BACKBONE,
    WORLD_EXTRACTOR,
    WORLD_IMAGES,
    WORLD_TRAIN,
    TrainConfig,
)
from featscope.featinv.model import build, load_model
from featscope.featinv.training import train
from featscope.world import WEIGHTS_DIR


def embedded_folder() -> Path:
    """Where the embedded FeatInv model lives inside the installed package."""
    return WEIGHTS_DIR / "featinv-shape-net"


def resolve_model(model: str | Path | None) -> Path:
    """``model`` as a folder; None means the embedded world model (which must have been trained and exported)."""
    if model is not None:
        return Path(model)
    folder = embedded_folder()
    if not (folder / "config.json").is_file():
        raise FeatscopeError(
            f"no embedded FeatInv model in {folder} yet; train and export it with `featscope featinv world --out "
            "runs/featinv-world` or pass --model DIR"
        )
    return folder


def export_model(source: str | Path, folder: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy a trained model (RUN/model) to ``folder`` with weights stored in ``dtype`` (fp16: half the size)."""
    folder = Path(folder)
    partial = folder.parent / f".{folder.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    load_model(source).save(partial, dtype=dtype)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def train_world(
    out: str | Path,
    *,
    config: TrainConfig | None = None,
    n: int = WORLD_IMAGES,
    world_seed: int = 0,
    layer: str = WORLD_EXTRACTOR.partition("@")[2],
    adapter_width: int = WORLD_ADAPTER_WIDTH,
    export: str | Path | None = None,
    device: str = "auto",
    quiet: bool = False,
) -> Path:
    """Train (or resume) the embedded model on ``n`` world images and export it (default: into the package).

    Returns the exported folder. The training folder ``out`` resumes like ``train``.
    """
    config = config or replace(WORLD_TRAIN)
    extractor = f"{WORLD_EXTRACTOR.partition('@')[0]}@{layer}"
    model = build(WORLD_BACKBONE, extractor, adapter_width=adapter_width, seed=config.seed)
    trained = train(model, out, world=n, world_seed=world_seed, config=config, device=device, quiet=quiet)
    return export_model(trained, export or embedded_folder())
