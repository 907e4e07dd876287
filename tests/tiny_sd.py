"""Tiny random-weight diffusion models in real on-disk formats, for tests (no downloads).

* ``build_tiny_sd`` / ``save_tiny_sd``: a Stable Diffusion pipeline in miniature (UNet2DConditionModel,
  AutoencoderKL, CLIPTextModel, a BPE CLIPTokenizer, SD's scaled-linear scheduler), saved as a
  diffusers folder.
* ``sd_to_ldm`` / ``save_single_file``: the same weights as one original-LDM (CompVis) checkpoint,
  keys ``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``.
* ``save_tiny_pixel``: a pixel-space model folder (``unet/``, ``scheduler/``, optional featscope
  ``text_encoder/``), unconditional or caption-conditioned.
"""

from __future__ import annotations

import string
import sys
import types
from pathlib import Path
from unittest import mock

import torch
from diffusers import (
    AutoencoderKL,
    DDPMPipeline,
    DDPMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from featscope.world.text import WorldTextEncoder

TEXT_DIM = 16
MAX_TOKENS = 12
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def randomize(module: nn.Module, seed: int, std: float = 0.2) -> nn.Module:
    """Add seeded noise to every parameter (no zero-initialised layer hides a key-mapping error)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * std)
    return module


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over lowercase letters and digits, with a few merges."""
    chars = string.ascii_lowercase + string.digits
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(chars) + [c + "</w>" for c in chars]
    merges = [("r", "e"), ("e", "d</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    tokens += ["re", "ed</w>", "ca", "cat</w>", "do", "dog</w>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


def clip_config(tokenizer: CLIPTokenizer, hidden: int = TEXT_DIM, **extra) -> CLIPTextConfig:
    """A 2-layer CLIP text encoder config of width ``hidden`` for ``tokenizer`` (``extra``: more fields)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_tiny_sd(seed: int = 0) -> StableDiffusionPipeline:
    """A random-weight Stable Diffusion pipeline: 16 px images, 8x8x4 latents, 16-dim text embeddings."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(clip_config(tokenizer))
    for i, module in enumerate((unet, vae, text_encoder)):
        randomize(module, seed + i, std=0.1)
    scheduler = PNDMScheduler(**SD_BETAS, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(folder: str | Path, seed: int = 0) -> StableDiffusionPipeline:
    """Build the tiny pipeline and save it as a diffusers folder (model_index.json, one folder per component)."""
    pipe = build_tiny_sd(seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


# -- diffusers -> original LDM keys (the inverse of diffusers' single-file conversion) -------------
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text and time-id embedding
    "add_embedding.linear_2": "label_emb.0.2",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _down_prefixes(config) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for the down and mid blocks (a UNet's or a ControlNet's)."""
    lpb, levels = config.layers_per_block, len(config.block_out_channels)
    down_attn = [t.startswith("CrossAttn") for t in config.down_block_types]
    out: dict[str, str] = {}
    index = 0
    for b in range(levels):
        for j in range(lpb):
            index += 1
            out[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{index}.0"
            if down_attn[b]:
                out[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{index}.1"
        if b < levels - 1:
            index += 1
            out[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
    out.update(
        {
            "mid_block.resnets.0": "middle_block.0",
            "mid_block.attentions.0": "middle_block.1",
            "mid_block.resnets.1": "middle_block.2",
        }
    )
    return out


def _unet_prefixes(config) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for the UNet's blocks."""
    lpb, levels = config.layers_per_block, len(config.block_out_channels)
    up_attn = [t.startswith("CrossAttn") for t in config.up_block_types]
    out = _down_prefixes(config)
    for b in range(levels):
        for j in range(lpb + 1):
            index = b * (lpb + 1) + j
            out[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{index}.0"
            if up_attn[b]:
                out[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{index}.1"
        if b < levels - 1:
            out[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{index}.{2 if up_attn[b] else 1}.conv"
    return out


def _rename(key: str, prefixes: dict[str, str]) -> tuple[str, str] | None:
    """Split ``key`` at the longest known module prefix: (LDM prefix, rest of the key)."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if key.startswith(prefix + "."):
            return prefixes[prefix], key[len(prefix) + 1 :]
    return None


def unet_to_ldm(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    return _to_ldm(unet.state_dict(), {**_UNET_TOP, **_unet_prefixes(unet.config)})


def featinv_to_ldm(controlnet: nn.Module) -> dict[str, torch.Tensor]:
    """A featscope FeatInv ControlNet under the published checkpoint's keys: ``control_model.*`` of an LDM
    ControlNet (``zero_convs``, ``middle_block_out``) with FeatInv's ``input_hint_block.block.{1,3,5}``."""
    prefixes = {**_UNET_TOP, **_down_prefixes(controlnet.config), "controlnet_mid_block": "middle_block_out.0"}
    zero_convs = range(len(controlnet.controlnet_down_blocks))
    prefixes.update({f"controlnet_down_blocks.{i}": f"zero_convs.{i}.0" for i in zero_convs})
    prefixes.update({f"controlnet_cond_embedding.block.{j}": f"input_hint_block.block.{j + 1}" for j in (0, 2, 4)})
    return {f"control_model.{k}": v.detach().clone() for k, v in _to_ldm(controlnet.state_dict(), prefixes).items()}


def _to_ldm(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new_prefix, rest = _rename(key, prefixes)
        if ".resnets." in key:
            head, _, leaf = rest.partition(".")
            rest = f"{_RESNET[head]}.{leaf}"
        out[f"{new_prefix}.{rest}"] = value
    return out


def vae_to_ldm(vae: AutoencoderKL) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    prefixes = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        prefixes.update(
            {
                f"{part}.conv_in": f"{part}.conv_in",
                f"{part}.conv_out": f"{part}.conv_out",
                f"{part}.conv_norm_out": f"{part}.norm_out",
                f"{part}.mid_block.attentions.0": f"{part}.mid.attn_1",
            }
        )
        for j in range(2):
            prefixes[f"{part}.mid_block.resnets.{j}"] = f"{part}.mid.block_{j + 1}"
    for i in range(levels):
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{levels - 1 - i}.upsample.conv"
        for j in range(vae.config.layers_per_block + 1):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
    out = {}
    for key, value in vae.state_dict().items():
        new_prefix, rest = _rename(key, prefixes)
        if ".attentions." in key:
            head, _, leaf = rest.rpartition(".")
            rest = f"{_VAE_ATTENTION[head]}.{leaf}"
            value = value[:, :, None, None] if value.dim() == 2 else value  # LDM uses 1x1 convolutions
        rest = rest.replace("conv_shortcut", "nin_shortcut")
        out[f"{new_prefix}.{rest}"] = value
    return out


def sd_to_ldm(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights under original-LDM checkpoint keys (as in sd-v1-4.ckpt)."""
    state = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(pipe.unet).items()}
    state.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(pipe.vae).items()})
    text = pipe.text_encoder.state_dict()
    state.update(
        {f"cond_stage_model.transformer.text_model.{k.removeprefix('text_model.')}": v for k, v in text.items()}
    )
    scheduler = DDPMScheduler(**SD_BETAS)
    state["betas"] = scheduler.betas
    state["alphas_cumprod"] = scheduler.alphas_cumprod
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def _lightning_callbacks() -> tuple[dict, dict[str, types.ModuleType]]:
    """A ``callbacks`` entry as real SD .ckpt files hold: objects pickled as pytorch_lightning classes."""
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    modules = {name: types.ModuleType(name) for name in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    modules[names[-1]].ModelCheckpoint = cls
    instance = cls()
    instance.__dict__.update(best_model_score=torch.tensor(0.25), dirpath="logs/checkpoints")
    return {cls: {"monitor": "val/loss", "best": instance}}, modules


def save_single_file(pipe: StableDiffusionPipeline, path: str | Path, extra: dict | None = None) -> Path:
    """Write the LDM checkpoint: safetensors for ``.safetensors``, else a Lightning-style ``torch.save`` dict;
    ``extra``: more tensors by key (e.g. a ControlNet's ``control_model.*``, as ControlLDM checkpoints hold)."""
    path = Path(path)
    state = {**sd_to_ldm(pipe), **(extra or {})}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
        return path
    callbacks, modules = _lightning_callbacks()
    with mock.patch.dict(sys.modules, modules):  # pickle needs the classes importable while saving only
        torch.save({"state_dict": state, "global_step": 0, "callbacks": callbacks}, path)
    return path


# -- pixel-space models ---------------------------------------------------------------------------
def build_pixel_unet(conditional: bool, seed: int = 0) -> UNet2DModel | UNet2DConditionModel:
    """A 16 px RGB UNet; caption-conditioned on WorldTextEncoder embeddings (dim 16) when ``conditional``."""
    torch.manual_seed(seed)
    common = {
        "sample_size": 16,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "norm_num_groups": 4,
    }
    if conditional:
        unet = UNet2DConditionModel(
            **common,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=4,
        )
    else:
        unet = UNet2DModel(
            **common, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")
        )
    return randomize(unet, seed, std=0.1).eval()


def save_tiny_pixel(folder: str | Path, conditional: bool, seed: int = 0) -> Path:
    """A pixel model folder; unconditional ones use DDPMPipeline's layout (with model_index.json)."""
    folder = Path(folder)
    unet = build_pixel_unet(conditional, seed)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    if conditional:
        unet.save_pretrained(folder / "unet")
        scheduler.save_pretrained(folder / "scheduler")
        torch.manual_seed(seed)
        WorldTextEncoder(dim=TEXT_DIM, heads=2).save(folder / "text_encoder")
    else:
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder
