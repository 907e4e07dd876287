"""The Backbone: a diffusion model as the solvers see it (noise prediction, x0 decode, prompts)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from featscope.errors import FeatscopeError

PromptEncoder = Callable[[list[str]], torch.Tensor]
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# abar where a zero-terminal-SNR schedule (rescale_betas_zero_snr) has exactly 0: diffusers' Euler schedulers' value
# for these models. It keeps x0 = (z - sqrt(1 - abar) eps) / sqrt(abar) finite at t = T - 1.
ZERO_SNR_FLOOR = 2.0**-24


class Backbone(nn.Module):
    """A pretrained diffusion model: latent (VAE inside) or pixel space.

    ``z`` is the diffusion state: a VAE latent for latent models, an image in [-1, 1] for pixel
    models. ``decode``/``encode`` convert between ``z`` and images in [0, 1] (B, 3, H, W).
    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler_config: dict,
        *,
        spec: str,
        vae: nn.Module | None = None,
        vae_scale: float = 1.0,
        vae_upcast: bool = False,
        prompt_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.prompt_encoder = prompt_encoder.eval().requires_grad_(False) if prompt_encoder is not None else None
        self.scheduler_config = dict(scheduler_config)
        self.spec = spec
        self.vae_scale = vae_scale
        self.vae_upcast = vae_upcast
        if self.prediction_type not in PREDICTION_TYPES:
            raise FeatscopeError(
                f"{spec}: unknown prediction_type {self.prediction_type!r} in the scheduler config; featscope "
                f"supports {', '.join(PREDICTION_TYPES)}"
            )
        alphas = DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod.float()
        alphas = torch.where(alphas > 0, alphas, torch.full_like(alphas, ZERO_SNR_FLOOR))
        self.register_buffer("alphas_cumprod", alphas, persistent=False)

    # -- shapes -----------------------------------------------------------------------------
    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", 1000))

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape (C, h, w) of one diffusion state."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, h, w)

    @property
    def image_size(self) -> tuple[int, int]:
        _, h, w = self.latent_shape
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        return (h * factor, w * factor)

    @property
    def has_prompts(self) -> bool:
        return self.prompt_encoder is not None

    @property
    def free_text_prompts(self) -> bool:
        """Whether the prompt encoder reads any text (CLIP, T5: true, as for unconditional models); a prompt encoder
        with a closed vocabulary says otherwise by its ``free_text`` attribute (the world's, which knows attribute
        words only), and its prompts must stay in that vocabulary (e.g. FeatInv's fixed prompt is then empty)."""
        return bool(getattr(self.prompt_encoder, "free_text", True))

    # rows of the conditioning tensor past the token sequence (packed pooled embeddings, time ids)
    extra_condition_rows = 0
    # whether the denoiser attends to the prompt's tokens through cross-attention layers that featscope can read
    # and edit (cross-attention masks, word swaps); joint-attention transformers (SD3, Flux) do not
    has_cross_attention = True

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # -- model calls ------------------------------------------------------------------------
    def eps(self, z_t: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None) -> torch.Tensor:
        """Noise prediction eps(z_t, t, cond), converted from v-prediction where needed."""
        if not torch.is_tensor(t):
            t = torch.tensor(t, device=z_t.device)
        t = t.expand(z_t.shape[0]) if t.dim() == 0 else t
        kwargs = self.unet_kwargs(cond) if cond is not None else {}
        return self.eps_from_output(self.unet(z_t.to(self.dtype), t, **kwargs).sample.to(z_t.dtype), z_t, t)

    def unet_kwargs(self, cond: torch.Tensor) -> dict:
        """The UNet's conditioning keyword arguments from ``cond`` (families with more inputs unpack it)."""
        return {"encoder_hidden_states": cond.to(self.dtype)}

    def eps_from_output(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's output as a noise prediction: v-prediction models' v = sqrt(abar) eps - sqrt(1 - abar) x0
        becomes eps = sqrt(abar) v + sqrt(1 - abar) z_t, sample-prediction models' x0 becomes
        eps = (z_t - sqrt(abar) x0) / sqrt(1 - abar); epsilon models' output is returned as it is."""
        if self.prediction_type == "epsilon":
            return output
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z_t.dtype)
        if self.prediction_type == "sample":
            return (z_t - a.sqrt() * output) / (1 - a).sqrt()
        return a.sqrt() * output + (1 - a).sqrt() * z_t

    def training_target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet learns to output for z_t = sqrt(abar) z0 + sqrt(1 - abar) noise: the noise, v or z0."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return z0
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1).to(z0.dtype)
        return a.sqrt() * noise - (1 - a).sqrt() * z0

    def x0_from_eps(self, z_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
        """x0 estimate: (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        a = self.alphas_cumprod[t].to(z_t.dtype)
        return (z_t - (1 - a).sqrt() * eps) / a.sqrt()

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Diffusion state -> image in [0, 1] (not clamped: guidance sees the raw decoder output)."""
        if self.vae is None:
            return (z0 + 1) / 2
        with self._vae_precision(z0.device):
            image = self.vae.decode((z0 / self.vae_scale).to(self.vae.dtype)).sample.to(z0.dtype)
        return (image + 1) / 2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] -> diffusion state (the VAE posterior mean for latent models)."""
        if self.vae is None:
            return images * 2 - 1
        with self._vae_precision(images.device):
            posterior = self.vae.encode((images * 2 - 1).to(self.vae.dtype)).latent_dist
        return posterior.mean.to(images.dtype) * self.vae_scale

    def _vae_precision(self, device: torch.device):
        """Autocast off around the VAE where it must run in its own (fp32) precision (``vae_upcast``: SDXL's VAE
        overflows in fp16, and its pipeline decodes upcast, outside autocast)."""
        return torch.autocast(device.type, enabled=False) if self.vae_upcast else nullcontext()

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor | None:
        """Prompt embeddings (B, L, D); None for unconditional models."""
        if self.prompt_encoder is None:
            return None
        with torch.no_grad():
            return self.prompt_encoder(prompts).to(self.device)

    def make_scheduler(self, kind: str, num_steps: int, spacing: str | None = None) -> DDPMScheduler | DDIMScheduler:
        """A diffusers scheduler on this model's noise schedule: ``ddpm`` (ancestral) or ``ddim`` (eta 0).

        Pixel models keep their config's ``clip_sample`` (x0 clipped to the data range [-1, 1] at each step);
        latents have no fixed range, so latent models never clip. ``spacing`` overrides the config's
        ``timestep_spacing`` (leading, trailing, linspace). DDPM uses the variance sigma_t^2 = beta_t
        (``fixed_large``), the published decoder's transition, whatever the config's ``variance_type``.
        Where the config's ``steps_offset`` would push the first timestep past the last trained one (SD's
        leading spacing with offset 1 at 1000 steps starts at t = 1000), the offset is dropped: the chain
        visits t = 999..0, as the published decoder's loop does. Zero-terminal-SNR schedules use
        :data:`ZERO_SNR_FLOOR` for their abar of 0, as :attr:`alphas_cumprod` does.
        """
        config = {k: v for k, v in self.scheduler_config.items() if not k.startswith("_")}
        clip = bool(config.get("clip_sample", False)) and not self.is_latent
        config.update(clip_sample=clip, prediction_type="epsilon")
        if spacing is not None:
            config.update(timestep_spacing=spacing)
        scheduler = self._scheduler(kind, config, num_steps)
        if int(scheduler.timesteps[0]) >= self.num_train_timesteps:
            scheduler = self._scheduler(kind, config | {"steps_offset": 0}, num_steps)
        scheduler.alphas_cumprod = self.alphas_cumprod.detach().cpu().clone()
        if kind == "ddim":
            scheduler.final_alpha_cumprod = scheduler.alphas_cumprod[0]
        return scheduler

    @staticmethod
    def _scheduler(kind: str, config: dict, num_steps: int) -> DDPMScheduler | DDIMScheduler:
        if kind == "ddpm":
            scheduler = DDPMScheduler.from_config(config, variance_type="fixed_large")
        else:
            scheduler = DDIMScheduler.from_config(config, set_alpha_to_one=False)
        scheduler.set_timesteps(num_steps)
        return scheduler
