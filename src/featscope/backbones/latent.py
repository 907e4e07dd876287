"""Stable Diffusion backbones (latent space): diffusers folders, hub ids and original single-file checkpoints."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import fetch_diffusers_config, infer_diffusers_model_type
from huggingface_hub import constants, snapshot_download, try_to_load_from_cache
from safetensors import safe_open
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from featscope.backbones.base import Backbone
from featscope.backbones.index import check_family
from featscope.errors import FeatscopeError, InputFileError, SpecError, reason

T = TypeVar("T")

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
SD_KINDS = ("v1", "v2")  # diffusers' names of the original checkpoint types StableDiffusionPipeline runs
CONFIG_PATTERNS = ["*.json", "**/*.json", "*.txt", "**/*.txt"]
MINISD_KEY = "control_model.input_hint_block.block.1.weight"  # FeatInv checkpoints, which hold miniSD too
FOLDER_LAYOUT = "a diffusers folder with unet/, vae/, text_encoder/, tokenizer/ and scheduler/"


class ClipPromptEncoder(nn.Module):
    """Prompts -> CLIP ``last_hidden_state`` (B, model_max_length, D), tokenized and padded as Stable Diffusion does."""

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder

    def forward(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device)).last_hidden_state


def load_sd(source: str, *, spec: str, dtype: torch.dtype, config: str | Path | None = None) -> Backbone:
    """``sd:SOURCE``: a diffusers folder, a hub id, or an original ``.ckpt``/``.safetensors`` checkpoint.

    ``config`` (a diffusers folder or hub id) gives the component configs for a single-file checkpoint;
    without it diffusers infers them (SD 1.x/2.x) and fetches them from the hub cache.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return _load_single_file(path, spec=spec, dtype=dtype, config=config)
    if config is not None:
        raise SpecError(f"a backbone config (--backbone-config) only applies to single-file checkpoints, not {spec!r}")
    check_family(source, "sd")
    if path.is_dir():
        try:
            return _load_components(str(path), spec=spec, dtype=dtype, local_only=True)
        except Exception as exc:
            raise FeatscopeError(f"cannot load {path} as Stable Diffusion ({FOLDER_LAYOUT}): {reason(exc)}") from exc
    if _looks_like_path(source):
        raise InputFileError(
            f"{source} does not exist; sd: takes {FOLDER_LAYOUT}, an original .ckpt/.safetensors checkpoint "
            "or a hub id such as CompVis/stable-diffusion-v1-4"
        )
    return _from_hub(
        source,
        lambda local_only: _load_components(source, spec=spec, dtype=dtype, local_only=local_only),
        what="Stable Diffusion model",
        fix="download it once with network access, or give a local folder: sd:/path/to/diffusers/folder",
    )


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or source.lower().endswith(SINGLE_FILE_SUFFIXES)
        or source.count("/") != 1
        or "\\" in source
    )


def vae_parts(vae: AutoencoderKL) -> dict:
    """The ``vae`` and ``vae_scale`` keywords of a :class:`Backbone` on a latent model's VAE."""
    return {"vae": vae, "vae_scale": float(vae.config.scaling_factor)}


def _backbone(unet, vae, tokenizer, text_encoder, scheduler_config: Mapping, spec: str) -> Backbone:
    encoder = ClipPromptEncoder(tokenizer, text_encoder)
    return Backbone(unet, dict(scheduler_config), spec=spec, prompt_encoder=encoder, **vae_parts(vae))


def _load_components(source: str, *, spec: str, dtype: torch.dtype, local_only: bool) -> Backbone:
    """The SD components from a diffusers folder or hub id (never the safety checker)."""
    local = {"local_files_only": local_only}
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **local)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **local)
    transformers_logging.disable_progress_bar()  # featscope shows its own progress, not per-file loading bars
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **local).to(dtype)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **local)
    scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **local)
    return _backbone(unet, vae, tokenizer, text_encoder, scheduler_config, spec)


# -- the Hugging Face hub: cached, offline, or downloaded ---------------------------------------
def _offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return bool(constants.HF_HUB_OFFLINE) or env


def _is_cached(repo_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)
    except ValueError:
        raise SpecError(f"{repo_id!r} is neither a file, a folder nor a hub id (ORG/NAME)") from None


def _from_hub(repo_id: str, load: Callable[[bool], T], *, what: str, fix: str) -> T:
    """``load(local_only)``: from the cache when cached (no network), else from the hub unless offline."""
    cached, offline = _is_cached(repo_id), _offline()
    if not cached and offline:
        raise FeatscopeError(
            f"{what} {repo_id!r} is not in the local Hugging Face cache and the hub is offline (HF_HUB_OFFLINE); {fix}"
        )
    attempts = [True, False] if cached and not offline else [offline]  # a partial cache: let the hub complete it
    for local_only in attempts:
        try:
            return load(local_only)
        except Exception as exc:  # hub and loader errors come in many types
            error = exc
    where = "the local Hugging Face cache" if offline else "the Hugging Face hub"
    raise FeatscopeError(f"cannot load {what} {repo_id!r} from {where} ({reason(error)}); {fix}") from error


# -- original single-file checkpoints -------------------------------------------------------------
class _Inert:
    """Stands in for non-tensor objects pickled in training checkpoints (e.g. Lightning callbacks): runs no code."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def _inert_globals(path: Path) -> list[tuple[type, str]]:
    """Classes pickled in a zip checkpoint that ``weights_only`` loading refuses, each mapped to ``_Inert``."""
    if path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return []
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:
        return []
    return [(_Inert, name) for name in names]


def read_checkpoint(
    path: Path, expects: str = "sd: expects an original Stable Diffusion"
) -> Mapping[str, torch.Tensor]:
    """The checkpoint's tensors by name without reading them all (meta tensors for safetensors, mmap for zip);
    ``expects`` names the family in the error for an unreadable file."""
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as handle:
                return {k: torch.empty(handle.get_slice(k).get_shape(), device="meta") for k in handle.keys()}
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:
        raise FeatscopeError(
            f"{path} is not a readable checkpoint ({reason(exc)}); {expects} .ckpt or .safetensors file"
        ) from None
    while isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return state if isinstance(state, Mapping) else {}


def model_kind(state: Mapping[str, torch.Tensor]) -> str:
    """diffusers' name of an original checkpoint's model type (``v1``, ``v2``, ``xl_base``, ...), or ``unknown``."""
    try:
        return infer_diffusers_model_type(state)
    except Exception:
        return "unknown"


def single_file_config(
    state: Mapping[str, torch.Tensor],
    path: Path,
    config: str | Path | None,
    *,
    family: str = "Stable Diffusion",
    kinds: tuple[str, ...] = SD_KINDS,
    kind_name: str = "Stable Diffusion 1.x/2.x",
) -> str:
    """A local folder with the diffusers configs (and tokenizers) of ``family`` for a single-file checkpoint:
    ``config`` (a folder or hub id), else the one diffusers infers from the checkpoint, whose type must be one of
    ``kinds``."""
    fix = f"download it once with network access, or pass a local diffusers {family} folder as config "
    fix += "(CLI: --backbone-config FOLDER)"
    if config is not None:
        folder = Path(config).expanduser()
        if folder.is_dir():
            return str(folder)
        if _looks_like_path(str(config)):
            raise InputFileError(f"backbone config {config} does not exist; give a diffusers {family} folder")
        repo = str(config)
    else:
        kind = model_kind(state)
        if kind not in kinds:
            raise FeatscopeError(
                f"{path} is a {kind} checkpoint, not {kind_name}; to try it anyway pass a matching diffusers "
                f"{family} folder as config (CLI: --backbone-config FOLDER)"
            )
        repo = fetch_diffusers_config(state)["pretrained_model_name_or_path"]
    return _from_hub(
        repo,
        lambda local_only: snapshot_download(repo, allow_patterns=CONFIG_PATTERNS, local_files_only=local_only),
        what="the diffusers config of this checkpoint,",
        fix=fix,
    )


def _load_single_file(path: Path, *, spec: str, dtype: torch.dtype, config: str | Path | None) -> Backbone:
    with torch.serialization.safe_globals(_inert_globals(path)):
        state = read_checkpoint(path)
        if not any(key.startswith("model.diffusion_model.") for key in state):
            raise FeatscopeError(
                f"{path} is not a Stable Diffusion checkpoint: it holds no model.diffusion_model.* weights "
                "(expected an original LDM checkpoint such as sd-v1-4.ckpt)"
            )
        if config is None and model_kind(state) == "v2":
            raise FeatscopeError(
                f"{path} is a Stable Diffusion 2.x checkpoint, whose weights do not say whether it predicts v at "
                "768 px (2.0, 2.1) or noise at 512 px (2.0-base, 2.1-base); pass its diffusers config "
                "(CLI: --backbone-config stabilityai/stable-diffusion-2-1 or stabilityai/stable-diffusion-2-1-base, "
                "or a local folder)"
            )
        if config is None and ("minisd" in path.stem.lower() or MINISD_KEY in state):
            raise FeatscopeError(
                f"{path} looks like miniSD, a 256 px fine-tune whose weights read as 512 px SD 1.x; pass its config "
                "(CLI: --backbone-config lambdalabs/miniSD-diffusers, or a local copy)"
            )
        config_dir = single_file_config(state, path, config)
        del state
        try:
            pipe = StableDiffusionPipeline.from_single_file(
                str(path),
                config=config_dir,
                torch_dtype=dtype,
                local_files_only=True,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        except Exception as exc:
            raise FeatscopeError(
                f"cannot load {path} as Stable Diffusion with the config {config_dir}: {reason(exc)}"
            ) from exc
    for name in ("unet", "vae", "text_encoder"):
        missing = [n for n, p in getattr(pipe, name).named_parameters() if p.is_meta]
        if missing:
            raise FeatscopeError(
                f"{path} has no weights for the {name} (e.g. {missing[0]}): the file is truncated or does not "
                f"match the config {config_dir}"
            )
    return _backbone(pipe.unet, pipe.vae, pipe.tokenizer, pipe.text_encoder, pipe.scheduler.config, spec)
