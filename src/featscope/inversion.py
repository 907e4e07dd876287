"""DDIM in both directions, DDIM inversion and null-text inversion of real images, and regeneration.

DDIM (eta 0) moves a state z at noise level abar_from to level abar_to with a noise estimate eps:

    x0 = (z - sqrt(1 - abar_from) eps) / sqrt(abar_from),   z' = sqrt(abar_to) x0 + sqrt(1 - abar_to) eps

Sampling moves down the levels (abar_t -> abar_prev), inversion up (abar_prev -> abar_t, eps taken at t,
prompt-to-prompt's approximation). Null-text inversion (Mokady et al.; as in DiG-IN's preprocessing)
then fits, step by step, the unconditional embedding so that CFG sampling retraces the inversion path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featscope.backbones.base import Backbone
from featscope.errors import FeatscopeError
from featscope.progress import tqdm
from featscope.sampling import cfg_blend


@dataclass(frozen=True)
class DDIMSchedule:
    """The DDIM steps in sampling order: timestep t_i, and the noise levels abar at t_i and at its target."""

    timesteps: list[int]
    abar: torch.Tensor  # (N,)
    abar_prev: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return len(self.timesteps)


ZERO_SNR = 1e-4  # abar below this: a state keeps less than 1% of the image's amplitude
FIXED_POINT_ITERATIONS = 3  # per DDIM inversion step; see ddim_invert


def ddim_schedule(backbone: Backbone, num_steps: int, *, inverted: bool = False) -> DDIMSchedule:
    """The backbone's DDIM steps as diffusers' DDIMScheduler takes them (prev = t - T // N, final level abar_0).

    ``inverted``: the schedule of a chain between an image and its DDIM-inverted x_T (inversion, null-text
    inversion, regeneration). Where the backbone's own schedule starts at zero SNR (v-prediction models with
    trailing spacing start at abar ~ 2e-9), such a chain uses leading spacing instead: inverting to zero SNR
    would keep (almost) nothing of the image in x_T.
    """
    scheduler = backbone.make_scheduler("ddim", num_steps)
    alphas = backbone.alphas_cumprod.float()
    if inverted and float(alphas[int(scheduler.timesteps[0])]) < ZERO_SNR:
        scheduler = backbone.make_scheduler("ddim", num_steps, spacing="leading")
    ratio = backbone.num_train_timesteps // num_steps
    final = torch.as_tensor(float(scheduler.final_alpha_cumprod), device=alphas.device)
    timesteps = [int(t) for t in scheduler.timesteps]
    prev = [alphas[t - ratio] if t - ratio >= 0 else final for t in timesteps]
    return DDIMSchedule(timesteps, alphas[timesteps], torch.stack(prev))


def ddim_move(
    z: torch.Tensor, eps: torch.Tensor, abar_from: torch.Tensor, abar_to: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic DDIM move between noise levels: (z at abar_to, x0 estimate)."""
    x0 = (z - (1 - abar_from).sqrt() * eps) / abar_from.sqrt()
    return abar_to.sqrt() * x0 + (1 - abar_to).sqrt() * eps, x0


def guided_eps(
    backbone: Backbone,
    z: torch.Tensor,
    t: int,
    cond: torch.Tensor | None,
    uncond: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:
    """eps_u + w (eps_c - eps_u) in one batched UNet call; eps_c alone when ``uncond`` is None."""
    if uncond is None:
        return backbone.eps(z, t, cond)
    eps_u, eps_c = backbone.eps(torch.cat([z, z]), t, torch.cat([uncond, cond])).chunk(2)
    return cfg_blend(eps_u, eps_c, guidance_scale)


def _prompts(prompt: str | list[str], batch: int) -> list[str]:
    return [prompt] * batch if isinstance(prompt, str) else list(prompt)


def _images(image: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    image = image.unsqueeze(0) if image.dim() == 3 else image
    return image.to(backbone.device, torch.float32)


@torch.no_grad()
def ddim_invert(
    backbone: Backbone,
    image: torch.Tensor,
    prompt: str | list[str] = "",
    num_steps: int = 20,
    fixed_point_iterations: int = FIXED_POINT_ITERATIONS,
) -> list[torch.Tensor]:
    """DDIM inversion of images (B, 3, H, W) in [0, 1] with the prompt's embedding (no CFG).

    Plain DDIM inversion moves z_{t-1} up to z_t with eps(z_{t-1}, t), an approximation of the eps(z_t, t)
    that sampling will use to come back. ``fixed_point_iterations`` re-evaluates eps at the new z_t that
    many times (z_t = move(z_{t-1}, eps(z_t, t))), so that sampling retraces the path; 0 is the published
    plain inversion. Returns the num_steps + 1 states [z_0 (the encoded image), ..., z_T]: x_T is last.
    """
    images = _images(image, backbone)
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    cond = backbone.encode_prompt(_prompts(prompt, len(images)))
    z = backbone.encode(images).float()
    latents = [z]
    for i in reversed(range(len(schedule))):
        t, low, high = schedule.timesteps[i], schedule.abar_prev[i], schedule.abar[i]
        up, _ = ddim_move(z, backbone.eps(z, t, cond), low, high)
        for _ in range(fixed_point_iterations):
            up, _ = ddim_move(z, backbone.eps(up, t, cond), low, high)
        z = up
        latents.append(z)
    return latents


def null_text_invert(
    backbone: Backbone,
    image: torch.Tensor,
    prompt: str | list[str] = "",
    num_steps: int = 20,
    guidance_scale: float = 3.0,
    inner_steps: int = 10,
    lr: float = 1e-2,
    tolerance: float = 1e-5,
    quiet: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Null-text inversion: (x_T (B, C, h, w), per-step unconditional embeddings (num_steps, B, L, D)).

    x_T comes from :func:`ddim_invert`. At sampling step i, Adam (lr ``lr * (1 - i / 100)``) fits the
    unconditional embedding, starting from the previous step's, for at most ``inner_steps`` steps so that
    the CFG step from the current state lands on the inverted state z_{i+1}: loss = mse(z', z_{i+1}),
    stopping early once ``loss < tolerance + i * 2e-5``. Images are inverted one at a time (the result
    of an image does not depend on the batch).
    """
    if not backbone.has_prompts:
        raise FeatscopeError(f"null-text inversion needs a prompt-conditioned backbone; {backbone.spec} has no prompts")
    images = _images(image, backbone)
    prompts = _prompts(prompt, len(images))
    path = ddim_invert(backbone, images, prompts, num_steps)
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    x_t, null_texts = path[-1], []
    bar = tqdm(total=len(images) * num_steps, disable=quiet, desc="null-text inversion", dynamic_ncols=True)
    for b in range(len(images)):
        cond = backbone.encode_prompt(prompts[b : b + 1])
        uncond = backbone.encode_prompt([""])
        z, per_step = x_t[b : b + 1], []
        for i, t in enumerate(schedule.timesteps):
            target = path[num_steps - 1 - i][b : b + 1]
            uncond = uncond.detach().requires_grad_(True)
            optimizer = torch.optim.Adam([uncond], lr=lr * (1 - i / 100))
            with torch.no_grad():
                eps_c = backbone.eps(z, t, cond)
            for _ in range(inner_steps):
                eps_u = backbone.eps(z, t, uncond)
                eps = cfg_blend(eps_u, eps_c, guidance_scale)
                z_prev, _ = ddim_move(z, eps, schedule.abar[i], schedule.abar_prev[i])
                loss = F.mse_loss(z_prev, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if loss.item() < tolerance + i * 2e-5:
                    break
            uncond = uncond.detach()
            per_step.append(uncond)
            with torch.no_grad():
                eps = guided_eps(backbone, z, t, cond, uncond, guidance_scale)
                z, _ = ddim_move(z, eps, schedule.abar[i], schedule.abar_prev[i])
            bar.update(1)
        null_texts.append(torch.cat(per_step))
    bar.close()
    return x_t, torch.stack(null_texts, dim=1)


def null_embeddings(
    backbone: Backbone, batch: int, num_steps: int, null_texts: torch.Tensor | list[torch.Tensor] | None = None
) -> torch.Tensor:
    """The unconditional embedding of every step (num_steps, batch, L, D): the empty prompt's, or ``null_texts``
    (num_steps, 1|batch, L, D), or a list of num_steps (1|batch, L, D) tensors, from :func:`null_text_invert`."""
    if null_texts is None:
        empty = backbone.encode_prompt([""]).float()
        return empty.expand(num_steps, batch, *empty.shape[1:])
    texts = torch.stack(list(null_texts)) if isinstance(null_texts, (list, tuple)) else null_texts
    if len(texts) != num_steps:
        raise FeatscopeError(f"{len(texts)} null-text embeddings for {num_steps} DDIM steps; use as many steps")
    return texts.to(backbone.device, torch.float32).expand(num_steps, batch, *texts.shape[2:])


@torch.no_grad()
def regenerate(
    backbone: Backbone,
    x_t: torch.Tensor,
    prompt: str | list[str] = "",
    null_texts: torch.Tensor | list[torch.Tensor] | None = None,
    guidance_scale: float = 3.0,
    num_steps: int = 20,
) -> torch.Tensor:
    """DDIM sampling from x_T with CFG, step i's unconditional embedding being ``null_texts[i]`` when given
    (then ``num_steps`` is their number), else the empty prompt's. Returns z_0 (``backbone.decode`` it)."""
    z = x_t.to(backbone.device, torch.float32)
    num_steps = len(null_texts) if null_texts is not None else num_steps
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    cond = backbone.encode_prompt(_prompts(prompt, len(z)))
    use_cfg = cond is not None and guidance_scale != 1.0
    uncond = null_embeddings(backbone, len(z), num_steps, null_texts) if use_cfg else None
    for i, t in enumerate(schedule.timesteps):
        eps = guided_eps(backbone, z, t, cond, uncond[i] if use_cfg else None, guidance_scale)
        z, _ = ddim_move(z, eps, schedule.abar[i], schedule.abar_prev[i])
    return z
