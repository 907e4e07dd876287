"""Reading user weight files (.pth/.pt/.bin/.safetensors state dicts) into a network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from featscope.errors import InputFileError

_WRAPPER_KEYS = ("state_dict", "model", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file, unwrapped from ``{"state_dict": ...}``-style checkpoints and DDP's ``module.``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputFileError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to parse means a bad file
        raise InputFileError(f"cannot read weights file {path}: {one_line(error)}") from error
    while isinstance(state, dict) and not _is_state_dict(state):
        inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not _is_state_dict(state):
        raise InputFileError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_weights(network: nn.Module, path: str | Path, *, what: str, drop_prefix: str | None = None) -> None:
    """Load the state dict in ``path`` into ``network`` strictly, with a one-line error when it does not fit.

    Keys under ``drop_prefix`` (a classifier head that was removed from ``network``) are ignored.
    """
    state = read_state_dict(path)
    if drop_prefix is not None:
        state = {k: v for k, v in state.items() if not k.startswith(drop_prefix + ".")}
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    problems = [
        f"{len(keys)} {kind} (e.g. {', '.join(keys[:3])})"
        for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if keys
    ]
    if problems:
        raise InputFileError(f"weights file {path} does not fit {what}: {'; '.join(problems)}")
    network.load_state_dict(state)


def _is_state_dict(state: dict) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def one_line(error: BaseException, limit: int = 200) -> str:
    """``error`` as a short single line, for wrapping library errors into FeatscopeErrors."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
