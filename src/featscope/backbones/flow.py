"""Flow-matching transformers, SD3 (``sd3:``) and Flux (``flux:``), presented to the solvers as VP models.

Rectified flow: x_s = (1 - s) x0 + s n (s = sigma in [0, 1]) and the transformer predicts v = n - x0, so

    x0 = x_s - s v,        n = x_s + (1 - s) v.

The Backbone interface is variance preserving (``z = sqrt(abar) x0 + sqrt(1 - abar) eps``). With

    r(s) = sqrt((1 - s)^2 + s^2),   z = x_s / r(s),   abar(s) = (1 - s)^2 / r(s)^2,   eps = n

that holds exactly, and ``x0_from_eps`` returns x_s - s v. ``alphas_cumprod`` holds abar on a table of
1000 sigmas: the model's shifted grid (static s = shift u / (1 + (shift - 1) u), or the pipeline's dynamic
shift with mu from this image size's token count) on u_i = U_MAX (i + 1) / 1000, U_MAX = 0.95 (SD3's shift 3:
s_max = 0.983). The grid stops short of s = 1 on purpose: there the state holds nothing of x0 and no noise
estimate gives it back, and guidance's step on x0, (s / (1 - s)) w_g g, grows without bound (at u = 0.9995
it is ~6000 w_g g, against SD 1.x's ~15 w_g g at its abar_T = 0.0047); at U_MAX it is ~57 w_g g, so the
published w_g and presets keep their scale. Sampling starts from pure noise at s_max, as SD 1.x starts from
pure noise at its abar_T (here a ~2% signal is left out of the first state). The table reaches the scheduler
as ``trained_betas`` (beta_i = 1 - abar_i / abar_{i-1}) with trailing spacing, so the solvers run unchanged:

* DDIM (eta 0) on this view is the flow's Euler sampler: sqrt(abar') x0 + sqrt(1 - abar') n, scaled by
  r(s'), is (1 - s') x0 + s' n = x_s + (s' - s) v. DDPM is its ancestral (stochastic) counterpart.
* CFG mixes eps linearly, which at a fixed x_s is the same mix of v (SD3's CFG; Flux's "true CFG").
* Universal guidance: w_g and the clamp act on the rescaled gradient added to eps = n, exactly as for SD;
  the x0 estimate moves by -(s / (1 - s)) w_g g, the velocity by w_g g / (1 - s). K (self-recurrence)
  re-noises z_{t-1} to z_t with the VP forward kernel, which is the flow's forward noising from s' to s.
  Backward guidance's Delta on x0 enters as eps - sqrt(abar / (1 - abar)) Delta = eps - ((1 - s) / s) Delta.

Conditioning is one tensor: the sequence embedding with the pooled embedding packed as one extra row
(see :func:`featscope.backbones.common.pack`). Flux's latents are packed into 2x2 patches inside ``eps``;
``z`` stays (C, h, w). Guidance-distilled Flux models get ``guidance`` (default 3.5, FluxPipeline's)
through their guidance embedding; CFG on top of it (``guidance_scale`` > 1) is Flux's optional true CFG.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
)
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast
from transformers.utils import logging as transformers_logging

from featscope.backbones.base import Backbone
from featscope.backbones.common import load_diffusers, pack, unpack
from featscope.backbones.latent import vae_parts
from featscope.errors import FeatscopeError

TABLE = 1000
U_MAX = 0.95  # the grid's noisiest u (see the module docstring)
FLUX_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale (the distilled guidance embedding)
FLUX_DEFAULT_LATENT = 128  # FluxPipeline's default_sample_size: 1024 px with the 8x VAE


def sigma_table(flow_config: dict, tokens: int) -> torch.Tensor:
    """The 1000 sigmas (float64, increasing): the model's shift on u_i = U_MAX (i + 1) / 1000."""
    u = torch.arange(1, TABLE + 1, dtype=torch.float64) / TABLE * U_MAX
    if flow_config.get("use_dynamic_shifting", False):
        mu = calculate_shift(
            tokens,
            flow_config.get("base_image_seq_len", 256),
            flow_config.get("max_image_seq_len", 4096),
            flow_config.get("base_shift", 0.5),
            flow_config.get("max_shift", 1.15),
        )
        if flow_config.get("time_shift_type", "exponential") == "linear":
            return mu / (mu + (1 / u - 1))
        return math.exp(mu) / (math.exp(mu) + (1 / u - 1))
    shift = float(flow_config.get("shift", 1.0))
    return shift * u / (1 + (shift - 1) * u)


def vp_scheduler_config(sigmas: torch.Tensor) -> dict:
    """A DDPM/DDIM scheduler config whose alphas_cumprod is abar(s) = (1 - s)^2 / ((1 - s)^2 + s^2)."""
    abar = (1 - sigmas) ** 2 / ((1 - sigmas) ** 2 + sigmas**2)
    previous = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
    return {
        "num_train_timesteps": TABLE,
        "trained_betas": (1 - abar / previous).tolist(),
        "prediction_type": "epsilon",
        "timestep_spacing": "trailing",
        "steps_offset": 0,
        "clip_sample": False,
    }


class FlowBackbone(Backbone):
    """A flow-matching transformer behind the VP interface; subclasses call the transformer (``velocity``)."""

    patch = 2  # latent pixels per token side (the token count sets the dynamic shift)
    extra_condition_rows = 1  # the pooled embedding
    has_cross_attention = False  # joint attention over text and image tokens

    def __init__(
        self,
        transformer: nn.Module,
        flow_config: dict,
        *,
        spec: str,
        vae: AutoencoderKL,
        prompt_encoder: nn.Module,
        latent_size: int,
    ) -> None:
        flow_config = {k: v for k, v in flow_config.items() if not k.startswith("_")}
        sigmas = sigma_table(flow_config, (latent_size // self.patch) ** 2)
        super().__init__(
            transformer, vp_scheduler_config(sigmas), spec=spec, prompt_encoder=prompt_encoder, **vae_parts(vae)
        )
        self.flow_config = flow_config
        self.vae_shift = float(vae.config.shift_factor or 0.0)
        self.latent_hw = (latent_size, latent_size)
        self.register_buffer("sigmas", sigmas.float(), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.vae.config.latent_channels), *self.latent_hw)

    def at_size(self, height: int, width: int) -> FlowBackbone:
        """Generate (height, width) images (multiples of the VAE factor times 2); the shift follows the size."""
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if height % (factor * self.patch) or width % (factor * self.patch):
            raise FeatscopeError(f"{self.spec} makes images whose sides are multiples of {factor * self.patch} px")
        self.latent_hw = (height // factor, width // factor)
        tokens = (height // factor // self.patch) * (width // factor // self.patch)
        sigmas = sigma_table(self.flow_config, tokens)
        self.scheduler_config = vp_scheduler_config(sigmas)
        device = self.alphas_cumprod.device
        self.sigmas = sigmas.float().to(device)
        self.alphas_cumprod = DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod.float().to(device)
        return self

    def eps(self, z_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None) -> torch.Tensor:
        """The noise estimate n = x_s + (1 - s) v at x_s = r(s) z_t."""
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=z_t.device)
        t = t.expand(z_t.shape[0]) if t.dim() == 0 else t
        s = self.sigmas[t].to(z_t.dtype).view(-1, 1, 1, 1)
        x_s = z_t * ((1 - s) ** 2 + s**2).sqrt()
        v = self.velocity(x_s.to(self.dtype), s.flatten(), cond.to(self.dtype)).to(z_t.dtype)  # sigmas in fp32
        return x_s + (1 - s) * v

    def velocity(self, x_s: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The transformer's v = n - x0 at x_s and sigmas ``s`` (B,), as the pipeline calls it."""
        raise NotImplementedError

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        image = self.vae.decode((z0 / self.vae_scale + self.vae_shift).to(self.vae.dtype)).sample.to(z0.dtype)
        return (image + 1) / 2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist
        return (posterior.mean.to(images.dtype) - self.vae_shift) * self.vae_scale


class SD3Backbone(FlowBackbone):
    """SD3 / SD3.5: SD3Transformer2DModel, timesteps s * 1000, pooled CLIP-L + CLIP-G embedding."""

    def velocity(self, x_s: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        sequence, (pooled,) = unpack(cond, (self.unet.config.pooled_projection_dim,))
        return self.unet(
            hidden_states=x_s, encoder_hidden_states=sequence, pooled_projections=pooled, timestep=s * 1000
        ).sample


class FluxBackbone(FlowBackbone):
    """Flux: FluxTransformer2DModel on 2x2-packed latents, timesteps s, optional distilled guidance embedding."""

    guidance = FLUX_GUIDANCE

    def velocity(self, x_s: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x_s.shape
        sequence, (pooled,) = unpack(cond, (self.unet.config.pooled_projection_dim,))
        guidance = None
        if self.unet.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance, device=x_s.device, dtype=torch.float32)
        out = self.unet(
            hidden_states=FluxPipeline._pack_latents(x_s, b, c, h, w),
            encoder_hidden_states=sequence,
            pooled_projections=pooled,
            timestep=s,
            img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x_s.device, x_s.dtype),
            txt_ids=torch.zeros(sequence.shape[1], 3, device=x_s.device, dtype=x_s.dtype),
            guidance=guidance,
        ).sample
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


# -- prompt encoders (as the pipelines encode prompts) -----------------------------------------------
def _ids(tokenizer, prompts: list[str], length: int, device: torch.device) -> torch.Tensor:
    ids = tokenizer(list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return ids.input_ids.to(device)


class SD3PromptEncoder(nn.Module):
    """Prompts -> packed (B, 77 + 256 + 1, D): both CLIPs' penultimate states zero-padded to the T5 width,
    then T5's states (zeros without a T5, as StableDiffusion3Pipeline), then the pooled CLIP-L + CLIP-G row."""

    def __init__(self, tokenizers: list, encoders: list[nn.Module], joint_dim: int, t5_length: int = 256) -> None:
        super().__init__()
        self.tokenizers = tokenizers  # CLIP-L, CLIP-G, optionally T5
        self.encoders = nn.ModuleList(encoders)
        self.joint_dim, self.t5_length = joint_dim, t5_length

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.encoders.parameters()).device
        hidden, pooled = [], []
        length = self.tokenizers[0].model_max_length  # StableDiffusion3Pipeline's tokenizer_max_length, for both
        for tokenizer, encoder in zip(self.tokenizers[:2], self.encoders[:2], strict=True):
            out = encoder(_ids(tokenizer, prompts, length, device), output_hidden_states=True)
            pooled.append(out[0])
            hidden.append(out.hidden_states[-2])
        clip = torch.cat(hidden, dim=-1)
        if len(self.encoders) > 2:
            t5 = self.encoders[2](_ids(self.tokenizers[2], prompts, self.t5_length, device))[0]
        else:
            t5 = torch.zeros(len(prompts), self.t5_length, self.joint_dim, device=device, dtype=clip.dtype)
        clip = nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return pack(torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1))


class FluxPromptEncoder(nn.Module):
    """Prompts -> packed (B, 512 + 1, D): T5's last hidden states, then CLIP's pooled output (FluxPipeline's)."""

    def __init__(self, tokenizers: list, encoders: list[nn.Module], t5_length: int = 512) -> None:
        super().__init__()
        self.tokenizers = tokenizers  # CLIP, T5
        self.encoders = nn.ModuleList(encoders)
        self.t5_length = t5_length

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.encoders.parameters()).device
        clip_tokenizer, t5_tokenizer = self.tokenizers
        ids = _ids(clip_tokenizer, prompts, clip_tokenizer.model_max_length, device)
        pooled = self.encoders[0](ids, output_hidden_states=False).pooler_output
        sequence = self.encoders[1](_ids(t5_tokenizer, prompts, self.t5_length, device), output_hidden_states=False)[0]
        return pack(sequence, pooled)


# -- loaders ------------------------------------------------------------------------------------------
# family -> (what it is, the folder layout it takes, an example hub id), for load_diffusers's messages
FOLDERS = {
    "sd3": (
        "SD3 model",
        "a diffusers SD3 folder with transformer/, vae/, text_encoder/, text_encoder_2/ (text_encoder_3/ optional) "
        "and their tokenizers",
        "stabilityai/stable-diffusion-3.5-medium",
    ),
    "flux": (
        "Flux model",
        "a diffusers Flux folder with transformer/, vae/, text_encoder/ (CLIP), text_encoder_2/ (T5) and their "
        "tokenizers",
        "black-forest-labs/FLUX.1-schnell",
    ),
}


def load_sd3(source: str, *, spec: str, dtype: torch.dtype) -> Backbone:
    """``sd3:SOURCE``: a StableDiffusion3Pipeline folder or hub id (SD3, SD3.5; with or without T5)."""
    return _load_folder("sd3", _load_sd3, source, spec=spec, dtype=dtype)


def load_flux(source: str, *, spec: str, dtype: torch.dtype) -> Backbone:
    """``flux:SOURCE``: a FluxPipeline folder or hub id (dev, schnell, fine-tunes); 1024 px (``at_size``)."""
    return _load_folder("flux", _load_flux, source, spec=spec, dtype=dtype)


def _load_folder(family: str, load: Callable, source: str, *, spec: str, dtype: torch.dtype) -> Backbone:
    """:func:`load_diffusers` with the family's messages (:data:`FOLDERS`) and ``load(source, spec=, dtype=,
    local_only=)``."""
    what, layout, example = FOLDERS[family]
    return load_diffusers(
        source,
        family=family,
        what=what,
        layout=layout,
        example=example,
        load=lambda src, local_only: load(src, spec=spec, dtype=dtype, local_only=local_only),
    )


def _text(cls, source: str, subfolder: str, dtype: torch.dtype, local: dict) -> nn.Module:
    transformers_logging.disable_progress_bar()
    return cls.from_pretrained(source, subfolder=subfolder, **local).to(dtype)


def _load_sd3(source: str, *, spec: str, dtype: torch.dtype, local_only: bool) -> SD3Backbone:
    local = {"local_files_only": local_only}
    index = DiffusionPipeline.load_config(source, **local)
    transformer = SD3Transformer2DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype, **local)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **local)
    encoders = [_text(CLIPTextModelWithProjection, source, f, dtype, local) for f in ("text_encoder", "text_encoder_2")]
    tokenizers = [CLIPTokenizer.from_pretrained(source, subfolder=f, **local) for f in ("tokenizer", "tokenizer_2")]
    if (index.get("text_encoder_3") or [None])[0] is not None:
        encoders.append(_text(T5EncoderModel, source, "text_encoder_3", dtype, local))
        tokenizers.append(T5TokenizerFast.from_pretrained(source, subfolder="tokenizer_3", **local))
    encoder = SD3PromptEncoder(tokenizers, encoders, int(transformer.config.joint_attention_dim))
    flow_config = FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler", **local)
    size = int(transformer.config.sample_size)
    return SD3Backbone(transformer, flow_config, spec=spec, vae=vae, prompt_encoder=encoder, latent_size=size)


def _load_flux(source: str, *, spec: str, dtype: torch.dtype, local_only: bool) -> FluxBackbone:
    local = {"local_files_only": local_only}
    transformer = FluxTransformer2DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype, **local)
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **local)
    encoders = [
        _text(CLIPTextModel, source, "text_encoder", dtype, local),
        _text(T5EncoderModel, source, "text_encoder_2", dtype, local),
    ]
    tokenizers = [
        CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **local),
        T5TokenizerFast.from_pretrained(source, subfolder="tokenizer_2", **local),
    ]
    flow_config = FlowMatchEulerDiscreteScheduler.load_config(source, subfolder="scheduler", **local)
    return FluxBackbone(
        transformer,
        flow_config,
        spec=spec,
        vae=vae,
        prompt_encoder=FluxPromptEncoder(tokenizers, encoders),
        latent_size=FLUX_DEFAULT_LATENT,
    )
