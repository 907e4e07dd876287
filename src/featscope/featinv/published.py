"""The published FeatInv checkpoint (LDM layout, ``control_model.*``) mapped into a featscope FeatInv model.

The ControlNet's keys go through diffusers' own LDM converter; FeatInv's hint block
(``input_hint_block.block.{1,3,5}``: the three convolutions after the bilinear upsample) maps onto the
adapter's ``block.{0,2,4}``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors import safe_open

from featscope.backbones.latent import _inert_globals, reason
from featscope.errors import InputFileError
from featscope.featinv.model import FeatInvModel

PREFIX = "control_model."
HINT = "input_hint_block."
HINT_CONVS = {"block.1": "block.0", "block.3": "block.2", "block.5": "block.4"}  # LDM hint block -> adapter
WHAT = "a FeatInv ControlNet checkpoint (LDM layout: control_model.* with input_hint_block.block.1/3/5)"


def read_state(path: Path) -> Mapping[str, torch.Tensor]:
    """The ControlNet's tensors of a ``.safetensors`` file, or every tensor of a (Lightning) ``torch.save``
    checkpoint (memory-mapped, unpickling no code)."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(PREFIX)}
        with torch.serialization.safe_globals(_inert_globals(path)):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # unreadable, truncated or foreign files
        raise InputFileError(f"{path} is not a readable checkpoint ({reason(error)}); expected {WHAT}") from None
    while isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return state if isinstance(state, Mapping) else {}


def convert(state: Mapping[str, torch.Tensor], layers_per_block: int, source: str) -> dict[str, torch.Tensor]:
    """The keys of a ``FeatInvModel`` state dict (``controlnet.*``) from an LDM FeatInv checkpoint's tensors."""
    control = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(PREFIX) and torch.is_tensor(v)}
    if not control:
        raise InputFileError(f"{source} holds no {PREFIX}* weights; expected {WHAT}")
    hint = {k[len(HINT) :]: control.pop(k) for k in list(control) if k.startswith(HINT)}
    adapter = {}
    for key, value in hint.items():
        module, _, leaf = key.rpartition(".")
        if module not in HINT_CONVS:
            raise InputFileError(
                f"{source} has a hint block with {HINT}{key}: an image ControlNet, not FeatInv's feature-map "
                f"hint block; expected {WHAT}"
            )
        adapter[f"controlnet_cond_embedding.{HINT_CONVS[module]}.{leaf}"] = value
    converted = convert_controlnet_checkpoint(control, {"layers_per_block": layers_per_block})
    return {f"controlnet.{k}": v for k, v in {**converted, **adapter}.items() if v is not None}


def load_published(model: FeatInvModel, path: str | Path) -> FeatInvModel:
    """Load the published ControlNet checkpoint at ``path`` into ``model`` (built for its backbone and network)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"FeatInv checkpoint {path} does not exist")
    state = convert(read_state(path), model.controlnet.config.layers_per_block, str(path))
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and state[k].shape != ours[k].shape]
    if missing or extra or wrong:
        first = (wrong or missing or extra)[0]
        shapes = f" ({tuple(state[first].shape)} in the file, {tuple(ours[first].shape)} here)" if wrong else ""
        raise InputFileError(
            f"{path} does not fit {model.config.describe()}: {len(missing)} missing, {len(extra)} unexpected and "
            f"{len(wrong)} mis-shaped weights (e.g. {first.removeprefix('controlnet.')}{shapes}); build the model "
            "for the checkpoint's backbone and network (featinv init --preset published)"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model
