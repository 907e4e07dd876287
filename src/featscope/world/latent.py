"""The latent world's model in Stable Diffusion 1.x's diffusers layout, built from the patterned world's words.

A CLIP BPE tokenizer trained offline on the world's caption words (each word one token; any other lowercase
word is spelled letter by letter, so nothing is unknown), a small ``CLIPTextModel``, an ``AutoencoderKL``
with 4x smaller latents (64 px images -> 4x16x16), a ``UNet2DConditionModel`` with cross-attention on the
captions, and SD 1.x's scheduler (scaled-linear betas 0.00085-0.012, PNDM, leading spacing, steps offset 1,
epsilon prediction). ``save_pipeline`` writes the folder with ``model_index.json`` that
``StableDiffusionPipeline.from_pretrained`` and featscope's ``sd:FOLDER`` load.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from featscope.world.patterns import ATTRIBUTES, IMAGE_SIZE

WORDS: tuple[str, ...] = tuple(sorted({v for values in ATTRIBUTES.values() for v in values} | {"on"}))
MAX_TOKENS = 16  # the longest caption is 12 tokens with its start and end tokens
LATENT_FACTOR = 4  # image side / latent side
SPECIAL = ("<|startoftext|>", "<|endoftext|>")
ALPHABET = string.ascii_lowercase + string.digits + "-,."
CLIP_SPLIT = r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"  # CLIP's pre-tokenizer: letters, single digits, punctuation
SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 1,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
}


@dataclass(frozen=True)
class LatentSizes:
    """Widths of the latent world's models (the defaults: the model to ship, ``TINY``: for tests)."""

    vae_channels: tuple[int, ...] = (16, 32, 64)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    text_dim: int = 64  # 0.11M
    text_layers: int = 2
    norm_groups: int = 16  # the UNet's group norms
    vae_norm_groups: int = 4  # the VAE's: with 16, its 16-channel first level normalised each channel apart and
    # lost the objects' colours (blurred grey objects after 2,000 steps, measured)
    head_dim: int = 16  # channels per attention head, in the UNet and the text encoder


SHIPPED = LatentSizes()
TINY = LatentSizes(
    vae_channels=(8, 16, 16), unet_channels=(16, 32, 32), text_dim=16, norm_groups=8, vae_norm_groups=4, head_dim=8
)


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose BPE merges are learnt from the world's words (deterministic, offline)."""
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="isolated")
    bpe.train_from_iterator(
        WORDS, trainers.BpeTrainer(vocab_size=10_000, end_of_word_suffix="</w>", show_progress=False)
    )
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    vocab = list(SPECIAL) + list(ALPHABET) + [c + "</w>" for c in ALPHABET]
    vocab += [a + b for a, b in merges if a + b not in vocab]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges)
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


def build_text_encoder(tokenizer: CLIPTokenizer, sizes: LatentSizes) -> CLIPTextModel:
    """A CLIP text transformer of ``sizes.text_dim`` width over ``tokenizer``'s vocabulary."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.text_dim,
        intermediate_size=4 * sizes.text_dim,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=max(1, sizes.text_dim // sizes.head_dim),
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae(sizes: LatentSizes) -> AutoencoderKL:
    """An SD-style KL autoencoder: 64 px RGB <-> 4 x 16 x 16 latents (``scaling_factor`` set after training)."""
    levels = len(sizes.vae_channels)
    if 2 ** (levels - 1) != LATENT_FACTOR:
        raise ValueError(f"the VAE needs {LATENT_FACTOR.bit_length()} levels for {LATENT_FACTOR}x latents")
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=sizes.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=sizes.vae_norm_groups,
        sample_size=IMAGE_SIZE,
    )


def build_unet(sizes: LatentSizes) -> UNet2DConditionModel:
    """SD 1.x's UNet in miniature: cross-attention at the two finer levels, one resnet per level."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // LATENT_FACTOR,
        in_channels=4,
        out_channels=4,
        block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=sizes.text_dim,
        attention_head_dim=[c // sizes.head_dim for c in sizes.unet_channels],  # diffusers' legacy name: heads
        norm_num_groups=sizes.norm_groups,
    )


def build_scheduler() -> PNDMScheduler:
    """Stable Diffusion 1.x's scheduler."""
    return PNDMScheduler(**SD_SCHEDULER)


def assemble(
    vae: AutoencoderKL, unet: UNet2DConditionModel, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel
) -> StableDiffusionPipeline:
    """The components as a ``StableDiffusionPipeline`` (no safety checker) with SD 1.x's scheduler."""
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_pipeline(sizes: LatentSizes = SHIPPED, seed: int = 0) -> StableDiffusionPipeline:
    """The untrained latent-world pipeline, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    return assemble(build_vae(sizes), build_unet(sizes), tokenizer, build_text_encoder(tokenizer, sizes))


def save_pipeline(pipe: StableDiffusionPipeline, folder: str | Path) -> Path:
    """Write ``pipe`` as a diffusers folder: ``model_index.json`` and float32 safetensors weights (diffusers
    loads half-precision files as half, which CPU pipelines mix badly with the float32 timestep embedding)."""
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
