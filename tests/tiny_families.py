"""Tiny random-weight pipelines of the other backbone families, saved as real diffusers folders (no downloads).

* ``save_tiny_sd2``: Stable Diffusion 2.x in miniature (v-prediction, OpenCLIP-style text config, linear
  projections in the UNet's transformers); ``save_sd2_single_file``: its weights as an original SD 2.x
  checkpoint, the text encoder under OpenCLIP keys (``cond_stage_model.model.*``).
* ``save_tiny_sdxl``: an SDXL pipeline (CLIPTextModel + CLIPTextModelWithProjection, text-time embedding);
  ``turbo=True`` gives Turbo's trailing-timestep scheduler; ``save_sdxl_single_file``: its weights as one original
  SDXL checkpoint (Stability's layout).
* ``save_tiny_sd3``: StableDiffusion3Pipeline (SD3Transformer2DModel, two CLIPs with projection, no T5).
* ``save_tiny_flux``: FluxPipeline (FluxTransformer2DModel with guidance embedding, CLIP + a tiny T5).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from tiny_sd import SD_BETAS, TEXT_DIM, build_tokenizer, clip_config, randomize, sd_to_ldm, unet_to_ldm, vae_to_ldm

SDXL_TEXT_2 = 24  # width of the tiny SDXL's second text encoder


def tiny_vae(latent_channels: int = 4, **extra) -> AutoencoderKL:
    """A 2x-downsampling VAE (block_out_channels (8, 16))."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        **extra,
    )


def tiny_unet(**extra) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4,
        **extra,
    )


def _randomized(seed: int, *modules: torch.nn.Module) -> None:
    for i, module in enumerate(modules):
        randomize(module, seed + i, std=0.1).eval()


def save_tiny_sd2(folder: str | Path, seed: int = 0) -> Path:
    """SD 2.x in miniature: v-prediction DDIM config, gelu text encoder with a projection dim, linear projections."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet = tiny_unet(cross_attention_dim=TEXT_DIM, attention_head_dim=(2, 4), use_linear_projection=True)
    vae = tiny_vae()
    text_encoder = CLIPTextModel(clip_config(tokenizer, hidden_act="gelu", projection_dim=TEXT_DIM))
    _randomized(seed, unet, vae, text_encoder)
    scheduler = DDIMScheduler(
        **SD_BETAS, prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def openclip_text(text_encoder: CLIPTextModel) -> dict[str, torch.Tensor]:
    """A CLIPTextModel's weights under OpenCLIP keys, as SD 2.x checkpoints hold them (q, k, v as in_proj)."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {
        "token_embedding.weight": state["embeddings.token_embedding.weight"],
        "positional_embedding": state["embeddings.position_embedding.weight"],
        "ln_final.weight": state["final_layer_norm.weight"],
        "ln_final.bias": state["final_layer_norm.bias"],
        "text_projection": torch.eye(text_encoder.config.hidden_size),
    }
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj"}
    names.update({"mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"})
    for i in range(text_encoder.config.num_hidden_layers):
        ours, theirs = f"encoder.layers.{i}", f"transformer.resblocks.{i}"
        for kind in ("weight", "bias"):
            qkv = [state[f"{ours}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{theirs}.attn.in_proj_{kind}"] = torch.cat(qkv)
            out.update({f"{theirs}.{new}.{kind}": state[f"{ours}.{old}.{kind}"] for old, new in names.items()})
    return {f"cond_stage_model.model.{k}": v for k, v in out.items()}


def save_sd2_single_file(pipe: StableDiffusionPipeline, path: str | Path) -> Path:
    """The SD 2.x pipeline as one original ``.safetensors`` checkpoint (UNet, VAE, OpenCLIP text encoder)."""
    state = {k: v for k, v in sd_to_ldm(pipe).items() if not k.startswith("cond_stage_model.")}
    state.update(openclip_text(pipe.text_encoder))
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
    return Path(path)


def save_tiny_sdxl(folder: str | Path, seed: int = 0, turbo: bool = False) -> Path:
    """SDXL in miniature: 16 px, text dims 16 + 24, pooled 16, time-id embedding 8 per id (the encoders' widths
    differ, as in SDXL, so that diffusers' single-file loader tells them apart)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet = tiny_unet(
        cross_attention_dim=TEXT_DIM + SDXL_TEXT_2,
        attention_head_dim=4,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TEXT_DIM,
    )
    vae = tiny_vae(scaling_factor=0.13025)
    text_encoder = CLIPTextModel(clip_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(tokenizer, SDXL_TEXT_2, projection_dim=TEXT_DIM))
    _randomized(seed, unet, vae, text_encoder, text_encoder_2)
    if turbo:
        scheduler = EulerAncestralDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing")
    else:
        scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def save_sdxl_single_file(pipe: StableDiffusionXLPipeline, path: str | Path) -> Path:
    """The SDXL pipeline as one original ``.safetensors`` file in Stability's layout: the UNet and VAE under
    LDM keys, CLIP-L under ``conditioner.embedders.0.transformer.``, the second encoder under OpenCLIP keys
    (``conditioner.embedders.1.model.``, its projection transposed as OpenCLIP stores it)."""
    state = {f"model.diffusion_model.{k}": v for k, v in unet_to_ldm(pipe.unet).items()}
    state.update({f"first_stage_model.{k}": v for k, v in vae_to_ldm(pipe.vae).items()})
    text = pipe.text_encoder.state_dict()
    prefix = "conditioner.embedders.0.transformer.text_model."
    state.update({prefix + k.removeprefix("text_model."): v for k, v in text.items()})
    second = openclip_text(pipe.text_encoder_2)
    second["cond_stage_model.model.text_projection"] = pipe.text_encoder_2.text_projection.weight.T
    prefix = "conditioner.embedders.1.model."
    state.update({prefix + k.removeprefix("cond_stage_model.model."): v for k, v in second.items()})
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(path))
    return Path(path)


def save_tiny_sd3(folder: str | Path, seed: int = 0) -> Path:
    """SD3 in miniature: 16 px (8x8x4 latents, patch 2), CLIP-L/G stand-ins of width 16, no T5 (zeros, as SD3)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=2 * TEXT_DIM,
        caption_projection_dim=16,
        pooled_projection_dim=2 * TEXT_DIM,
        pos_embed_max_size=8,
    )
    vae = tiny_vae(scaling_factor=1.5305, shift_factor=0.0609)
    encoders = [CLIPTextModelWithProjection(clip_config(tokenizer, projection_dim=TEXT_DIM)) for _ in range(2)]
    _randomized(seed, transformer, vae, *encoders)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=tokenizer,
        text_encoder_2=encoders[1],
        tokenizer_2=build_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def build_t5_tokenizer() -> T5TokenizerFast:
    """A unigram T5 tokenizer over lowercase letters and a few words."""
    pieces = ["<pad>", "</s>", "<unk>", "\u2581"] + [f"\u2581{w}" for w in ("a", "red", "cat", "dog")]
    pieces += list("abcdefghijklmnopqrstuvwxyz")
    return T5TokenizerFast(vocab=[(p, -float(i)) for i, p in enumerate(pieces)], extra_ids=0)


def save_tiny_flux(folder: str | Path, seed: int = 0) -> Path:
    """Flux in miniature: 4-channel latents packed 2x2 (16 channels), CLIP pooled 16, T5 width 32, guidance embeds."""
    tokenizer, t5_tokenizer = build_tokenizer(), build_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    vae = tiny_vae(scaling_factor=0.3611, shift_factor=0.1159)
    clip = CLIPTextModel(clip_config(tokenizer))
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    _randomized(seed, transformer, vae, clip, t5)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=4,
        max_image_seq_len=64,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)
