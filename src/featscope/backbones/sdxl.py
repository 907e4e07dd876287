"""SDXL backbones (``sdxl:HUB_ID|FOLDER|FILE``): two CLIP text encoders, pooled text embeddings, added time ids.

The solvers pass one conditioning tensor around (concatenated for CFG, indexed, shifted by learned deltas,
optimised by null-text inversion), so SDXL's three conditioning inputs travel packed in one
(B, L + 2, D) tensor (see :func:`featscope.backbones.common.pack`):

    rows 0..L-1   the sequence embedding: both encoders' penultimate hidden states side by side (D = D1 + D2)
    row  L        the pooled embedding (the second encoder's projected ``text_embeds``), zero-padded to D
    row  L + 1    the added time ids (original size, crop top-left (0, 0), target size = the image size)

``eps`` unpacks them into ``encoder_hidden_states`` and ``added_cond_kwargs``; the time ids leave the
autograd graph there, so optimised deltas move the sequence and pooled embeddings only. Where the pipeline
sets ``force_zeros_for_empty_prompt`` (SDXL base) the empty prompt encodes to zeros, SDXL's unconditional
embedding, so CFG's unconditional branch is the pipeline's. Turbo (trailing timesteps; use
guidance_scale 1 and few steps) and 512 px fine-tunes load the same way: the scheduler config and the
UNet's sample size come from the folder. In fp16 the VAE stays fp32 where its config says
``force_upcast`` (SDXL's VAE overflows in fp16), as StableDiffusionXLPipeline upcasts it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from featscope.backbones.base import Backbone
from featscope.backbones.common import load_diffusers, pack, unpack
from featscope.backbones.latent import (
    _inert_globals,
    read_checkpoint,
    reason,
    single_file_config,
    vae_parts,
)
from featscope.errors import FeatscopeError, SpecError

LAYOUT = "a diffusers SDXL folder with unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/"
TIME_IDS = 6  # original (h, w), crop top-left (y, x), target (h, w)


class SDXLPromptEncoder(nn.Module):
    """Prompts -> packed (B, L + 2, D) conditioning: sequence embedding, pooled embedding, time ids."""

    def __init__(
        self,
        tokenizers: list[CLIPTokenizer],
        text_encoders: list[nn.Module],
        time_ids: list[float],
        zeros_for_empty: bool,
    ) -> None:
        super().__init__()
        self.tokenizers = tokenizers
        self.text_encoders = nn.ModuleList(text_encoders)
        self.register_buffer("time_ids", torch.tensor(time_ids), persistent=False)
        self.zeros_for_empty = zeros_for_empty

    def forward(self, prompts: list[str]) -> torch.Tensor:
        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            ids = tokenizer(
                list(prompts),
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out = encoder(ids.to(self.time_ids.device), output_hidden_states=True)
            pooled = out[0] if out[0].dim() == 2 else pooled  # the projected embedding (second encoder)
            hidden.append(out.hidden_states[-2])
        sequence = torch.cat(hidden, dim=-1)
        if self.zeros_for_empty:
            keep = torch.tensor([p != "" for p in prompts], device=sequence.device, dtype=sequence.dtype)
            sequence, pooled = sequence * keep.view(-1, 1, 1), pooled * keep.view(-1, 1)
        return pack(sequence, pooled, self.time_ids.to(sequence.dtype).expand(len(prompts), -1))


class SDXLBackbone(Backbone):
    """An SDXL UNet whose ``cond`` is the packed conditioning of :class:`SDXLPromptEncoder`."""

    extra_condition_rows = 2  # the pooled embedding and the time ids

    def unet_kwargs(self, cond: torch.Tensor) -> dict:
        sequence, (pooled, time_ids) = unpack(cond.to(self.dtype), (self.pooled_dim, TIME_IDS))
        return {
            "encoder_hidden_states": sequence,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.detach()},
        }

    @property
    def pooled_dim(self) -> int:
        return int(self.prompt_encoder.text_encoders[-1].config.projection_dim)


def load_sdxl(source: str, *, spec: str, dtype: torch.dtype, config: str | Path | None = None) -> Backbone:
    """``sdxl:SOURCE``: an SDXL diffusers folder or hub id (base, Turbo, fine-tunes at any UNet sample size), or
    an original single-file checkpoint (``.safetensors``/``.ckpt``, Stability's layout), whose component configs
    come from ``config`` (a diffusers SDXL folder or hub id) or, without it, from the cached hub model diffusers
    infers for it."""
    path = Path(source).expanduser()
    if path.is_file():
        return _load_single_file(path, spec=spec, dtype=dtype, config=config)
    if config is not None:
        raise SpecError(f"a backbone config (--backbone-config) only applies to single-file checkpoints, not {spec!r}")
    return load_diffusers(
        source,
        family="sdxl",
        what="SDXL model",
        layout=LAYOUT,
        example="stabilityai/stable-diffusion-xl-base-1.0",
        load=lambda src, local_only: _load_components(src, spec=spec, dtype=dtype, local_only=local_only),
    )


def _load_components(source: str, *, spec: str, dtype: torch.dtype, local_only: bool) -> SDXLBackbone:
    local = {"local_files_only": local_only}
    index = DiffusionPipeline.load_config(source, **local)
    if not index.get("text_encoder") or index["text_encoder"][0] is None:
        raise FeatscopeError(
            "an SDXL refiner (no text_encoder/, aesthetic-score time ids) is not supported; use an SDXL base model"
        )
    scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **local)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **local)
    check_variance_preserving(scheduler_config, vae)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **local)
    transformers_logging.disable_progress_bar()
    encoders = [
        CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **local).to(dtype),
        CLIPTextModelWithProjection.from_pretrained(source, subfolder="text_encoder_2", **local).to(dtype),
    ]
    tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder=f, **local) for f in ("tokenizer", "tokenizer_2")]
    zeros_for_empty = bool(index.get("force_zeros_for_empty_prompt", True))
    return _backbone(unet, vae, encoders, tokenizers, scheduler_config, zeros_for_empty, spec=spec, dtype=dtype)


def check_variance_preserving(scheduler_config: dict, vae: AutoencoderKL) -> None:
    """Refuse SDXL-architecture models trained on another noise process or latent normalisation (Playground v2.5:
    an EDM scheduler, per-channel ``latents_mean``/``latents_std``): featscope's VP chains would silently
    sample them on default betas with the wrong latent scale."""
    name = str(scheduler_config.get("_class_name", ""))
    if name.startswith("EDM") or getattr(vae.config, "latents_mean", None) is not None:
        raise FeatscopeError(
            f"this SDXL-architecture model uses an EDM noise schedule ({name or 'latents_mean/latents_std'}, as "
            "Playground v2.5 does), which featscope does not support; use an SDXL base model or fine-tune"
        )


def _backbone(unet, vae, encoders, tokenizers, scheduler_config, zeros_for_empty: bool, *, spec, dtype) -> SDXLBackbone:
    if dtype == torch.float16 and vae.config.force_upcast:  # SDXL's VAE overflows in fp16 (the pipeline upcasts too)
        vae = vae.float()
    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    time_ids = [float(size), float(size), 0.0, 0.0, float(size), float(size)]
    encoder = SDXLPromptEncoder(tokenizers, encoders, time_ids, zeros_for_empty)
    upcast = bool(vae.config.force_upcast)
    return SDXLBackbone(
        unet, dict(scheduler_config), spec=spec, prompt_encoder=encoder, vae_upcast=upcast, **vae_parts(vae)
    )


# -- original single-file checkpoints (Stability's layout: model.diffusion_model.*, conditioner.embedders.*) ----
def _load_single_file(path: Path, *, spec: str, dtype: torch.dtype, config: str | Path | None) -> SDXLBackbone:
    with torch.serialization.safe_globals(_inert_globals(path)):
        state = read_checkpoint(path, expects="sdxl: expects an SDXL")
        if not any(key.startswith("conditioner.embedders.") for key in state):
            raise FeatscopeError(
                f"{path} is not an SDXL checkpoint: it holds no conditioner.embedders.* text encoders "
                "(expected an original SDXL file such as sd_xl_base_1.0.safetensors; SD 1.x/2.x files load as sd:)"
            )
        config_dir = single_file_config(
            state, path, config, family="SDXL", kinds=("xl_base",), kind_name="an SDXL base"
        )
        del state
        try:
            pipe = StableDiffusionXLPipeline.from_single_file(
                str(path), config=config_dir, torch_dtype=dtype, local_files_only=True
            )
        except Exception as exc:
            raise FeatscopeError(f"cannot load {path} as SDXL with the config {config_dir}: {reason(exc)}") from exc
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        missing = [n for n, p in getattr(pipe, name).named_parameters() if p.is_meta]
        if missing:
            raise FeatscopeError(
                f"{path} has no weights for the {name} (e.g. {missing[0]}): the file is truncated or does not "
                f"match the config {config_dir}"
            )
    encoders, tokenizers = [pipe.text_encoder, pipe.text_encoder_2], [pipe.tokenizer, pipe.tokenizer_2]
    zeros_for_empty = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
    return _backbone(
        pipe.unet, pipe.vae, encoders, tokenizers, pipe.scheduler.config, zeros_for_empty, spec=spec, dtype=dtype
    )
