"""The end-to-end solver: optimise the start of the sampling chain through the whole chain (DiG-IN).

Optimised, with Adam: the initial latent x_T, and additive deltas on the prompt embedding and on the
unconditional (null-text) embedding, one delta per DDIM step. One iteration:

    z_T = x_T;  for i = 0..N-1:  eps_i = eps_u + w (eps_c - eps_u)  with  c_i = c + dc_i,  u_i = u_i + du_i
                                 x0_i  = (z_t - sqrt(1 - abar_t) eps_i) / sqrt(abar_t)
                                 z_prev = sqrt(abar_prev) x0_i + sqrt(1 - abar_prev) eps_i
    L = sum_{k = last loss_steps steps} w_k  objective(D(x0_k), x0_k)        (augmented network inputs)
    backprop L through every step;  Adam step;  x_T <- x_T * ||x_T^(0)|| / ||x_T||

Iteration 0's image is the plain sample. Each iterate is scored without augmentation on its final image
and the best iterate (iteration 0 included) is kept. See docs/methods/endtoend.md.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch.utils.checkpoint import checkpoint

from featscope.backbones.base import Backbone
from featscope.devices import generators_for
from featscope.errors import FeatscopeError
from featscope.inversion import ddim_move, ddim_schedule, guided_eps, null_embeddings
from featscope.objectives import Context, Cutouts, Objective
from featscope.progress import tqdm
from featscope.solvers.configs import EndToEndConfig
from featscope.solvers.universal import straight_through_clamp


@dataclass
class IterationInfo:
    """What a callback receives after each iterate is scored."""

    iteration: int
    losses: torch.Tensor  # (B,) non-augmented loss of this iterate's image
    terms: dict[str, torch.Tensor]  # each objective term's (B,) value
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]


@dataclass
class EndToEndResult:
    images: torch.Tensor  # (I + 1, B, 3, H, W) in [0, 1] on the CPU; images[0] = the plain sample
    losses: torch.Tensor  # (I + 1, B) non-augmented loss of each iterate (used for selection)
    terms: dict[str, torch.Tensor]  # each objective term's (I + 1, B) values
    augmented_losses: torch.Tensor  # (I', B) the weighted, augmented losses that were backpropagated
    latents: torch.Tensor  # (I + 1, B, C, h, w) x_T of each iterate
    best: torch.Tensor  # (B, 3, H, W) the iterate with the lowest loss, per sample
    best_iteration: torch.Tensor  # (B,) its index (0 = the plain sample)
    cond_delta: torch.Tensor | None = None  # (S, B, L, D) of the last iterate (S = num_steps or 1)
    uncond_delta: torch.Tensor | None = None
    stopped_early: bool = False

    @property
    def final_latent(self) -> torch.Tensor:
        """x_T of the last iterate."""
        return self.latents[-1]


class StepEdit(Protocol):
    """An edit of the chain at every step, e.g. prompt-to-prompt's re-injection of a source's cross-attention and
    blending of its latents (:mod:`featscope.investigate.word_swap_start`): ``installed`` is held while the solver
    runs, ``begin(i)`` comes before step i's UNet call and ``after(i, z)`` maps the state it made (differentiably).
    Both run again when a checkpointed step is recomputed, so they must depend on ``i`` alone."""

    def installed(self, backbone: Backbone) -> AbstractContextManager: ...

    def begin(self, i: int) -> None: ...

    def after(self, i: int, z: torch.Tensor) -> torch.Tensor: ...


def best_iterates(losses: torch.Tensor) -> torch.Tensor:
    """Per sample, the first iteration with the lowest finite loss: (I + 1, B) -> (B,)."""
    return torch.where(torch.isfinite(losses), losses, torch.inf).argmin(0)


class _Chain:
    """The DDIM chain with its (optionally optimised) conditioning, differentiable end to end."""

    def __init__(self, backbone: Backbone, config: EndToEndConfig, cond, uncond, inverted: bool = False,
                 edit: StepEdit | None = None) -> None:  # fmt: skip
        self.backbone, self.config, self.edit = backbone, config, edit
        self.schedule = ddim_schedule(backbone, config.num_steps, inverted=inverted)
        self.cond, self.uncond = cond, uncond  # (B, L, D) or None; (N, B, L, D) or None
        slots = config.num_steps if config.per_timestep_deltas else 1
        self.cond_delta = torch.zeros(slots, *cond.shape, device=cond.device) if cond is not None else None
        self.uncond_delta = torch.zeros(slots, *cond.shape, device=cond.device) if uncond is not None else None

    def _step(self, z, cond_i, uncond_i, i: int):
        if self.edit is not None:
            self.edit.begin(i)
        eps = guided_eps(self.backbone, z, self.schedule.timesteps[i], cond_i, uncond_i, self.config.guidance_scale)
        z, x0 = ddim_move(z, eps, self.schedule.abar[i], self.schedule.abar_prev[i])
        return (self.edit.after(i, z), x0) if self.edit is not None else (z, x0)

    def run(self, z: torch.Tensor, keep_last: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """z_T -> (z_0, x0 predictions of the last ``keep_last`` steps)."""
        x0s = []
        for i in range(len(self.schedule)):
            slot = i if self.config.per_timestep_deltas else 0
            cond_i = self.cond + self.cond_delta[slot] if self.cond is not None else None
            uncond_i = self.uncond[i] + self.uncond_delta[slot] if self.uncond is not None else None
            if self.config.checkpointing and torch.is_grad_enabled():
                z, x0 = checkpoint(self._step, z, cond_i, uncond_i, i, use_reentrant=False)
            else:
                z, x0 = self._step(z, cond_i, uncond_i, i)
            if i >= len(self.schedule) - keep_last:
                x0s.append(x0)
        return z, x0s

    def decode(self, z0: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (straight-through clamp: clamped values, identity gradient)."""
        if self.config.checkpointing and torch.is_grad_enabled():
            return straight_through_clamp(checkpoint(self.backbone.decode, z0, use_reentrant=False).float())
        return straight_through_clamp(self.backbone.decode(z0).float())


def _initial_latent(backbone, generators, start_latent) -> torch.Tensor:
    if start_latent is not None:
        z = start_latent.detach().to(backbone.device, torch.float32)
        return (z.unsqueeze(0) if z.dim() == 3 else z).clone()
    if generators is None:
        raise FeatscopeError("give one seeded generator per sample (generators=...) or a start_latent")
    shape = (len(generators), *backbone.latent_shape)
    return randn_tensor(shape, generator=generators, device=backbone.device, dtype=torch.float32)


def _start_image(backbone: Backbone, image: torch.Tensor | None) -> torch.Tensor | None:
    if image is None:
        return None
    image = image.to(backbone.device, torch.float32)
    image = image.unsqueeze(0) if image.dim() == 3 else image
    if tuple(image.shape[-2:]) != tuple(backbone.image_size):
        raise FeatscopeError(
            f"the start image is {tuple(image.shape[-2:])} pixels; {backbone.spec} makes {backbone.image_size}"
        )
    return image


class _History:
    """Every iterate's x_T, image and (non-augmented) losses, turned into the result at the end."""

    def __init__(self) -> None:
        self.latents: list[torch.Tensor] = []
        self.images: list[torch.Tensor] = []
        self.losses: list[torch.Tensor] = []
        self.terms: dict[str, list[torch.Tensor]] = {}
        self.augmented: list[torch.Tensor] = []

    def record(self, z_t: torch.Tensor, images: torch.Tensor, loss: torch.Tensor, parts: dict) -> IterationInfo:
        self.latents.append(z_t.detach().cpu().clone())
        self.images.append(images.cpu())
        self.losses.append(loss.detach().float().cpu())
        for name, value in parts.items():
            self.terms.setdefault(name, []).append(value.detach().float().cpu())
        current = {k: v[-1] for k, v in self.terms.items()}
        return IterationInfo(len(self.losses) - 1, self.losses[-1], current, self.images[-1])

    def result(self, chain: _Chain, stopped: bool) -> EndToEndResult:
        losses, images = torch.stack(self.losses), torch.stack(self.images)
        best_iteration = best_iterates(losses)
        batch = losses.shape[1]
        return EndToEndResult(
            images=images,
            losses=losses,
            terms={k: torch.stack(v) for k, v in self.terms.items()},
            augmented_losses=torch.stack(self.augmented) if self.augmented else torch.zeros(0, batch),
            latents=torch.stack(self.latents),
            best=images[best_iteration, torch.arange(batch)],
            best_iteration=best_iteration,
            cond_delta=chain.cond_delta.detach().cpu() if chain.cond_delta is not None else None,
            uncond_delta=chain.uncond_delta.detach().cpu() if chain.uncond_delta is not None else None,
            stopped_early=stopped,
        )


def optimize(
    backbone: Backbone,
    objective: Objective,
    *,
    prompt: str | list[str] = "",
    generators: list[torch.Generator] | None = None,
    start_latent: torch.Tensor | None = None,
    null_texts: torch.Tensor | list[torch.Tensor] | None = None,
    start_image: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    config: EndToEndConfig | None = None,
    callback: Callable[[IterationInfo], None] | None = None,
    step_edit: StepEdit | None = None,
    quiet: bool = False,
) -> EndToEndResult:
    """Minimise ``objective`` over generated images by optimising x_T and the embedding deltas.

    The batch is one sample per generator (x_T drawn from it), or the rows of ``start_latent`` (an x_T
    from DDIM or null-text inversion, with its ``null_texts`` (num_steps, 1|B, L, D); the chain then runs
    on the inversion's schedule, see :func:`~featscope.inversion.ddim_schedule`). ``generators`` also
    draw the augmentation (else seeds 0..B-1 do). ``start_image`` (B|1, 3, H, W) in [0, 1] and ``mask``
    (1 = foreground) feed the regularisers; without a start image the plain sample (iteration 0) is the
    reference. ``step_edit`` edits every step of the chain (:class:`StepEdit`). Samples are independent: a
    sample's result does not depend on the batch it is in.
    """
    config = config or EndToEndConfig()
    config.validate()
    device = backbone.device
    z_t = _initial_latent(backbone, generators, start_latent)
    batch = len(z_t)
    prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    if len(prompts) != batch or (generators is not None and len(generators) != batch):
        raise FeatscopeError(f"{batch} samples need as many prompts and generators (or one prompt string)")
    aug_generators = generators if generators is not None else generators_for(list(range(batch)), device)
    cond = backbone.encode_prompt(prompts).float() if backbone.has_prompts else None
    uncond = None
    if cond is not None and config.guidance_scale != 1.0:
        uncond = null_embeddings(backbone, batch, config.num_steps, null_texts)
    elif null_texts is not None:
        raise FeatscopeError("null_texts replace the unconditional embedding of CFG: use guidance_scale > 1")
    chain = _Chain(backbone, config, cond, uncond, inverted=start_latent is not None, edit=step_edit)
    variables = [(z_t, config.latent_lr), (chain.cond_delta, config.cond_lr), (chain.uncond_delta, config.uncond_lr)]
    groups = [{"params": [t.requires_grad_(True)], "lr": lr} for t, lr in variables if t is not None and lr > 0]
    if not groups and config.iterations > 0:
        raise FeatscopeError("nothing to optimise: every learning rate is 0 (or the backbone takes no prompts)")
    optimizer = torch.optim.Adam(groups) if groups else None
    reference = _start_image(backbone, start_image)
    with torch.no_grad():
        reference_latents = backbone.encode(reference).float() if reference is not None else None
    mask = mask.to(device, torch.float32) if mask is not None else None

    with step_edit.installed(backbone) if step_edit is not None else nullcontext():
        return _iterate(backbone, objective, chain, z_t, optimizer, reference, reference_latents, mask,
                        aug_generators, config, callback, quiet)  # fmt: skip


def _iterate(backbone, objective, chain, z_t, optimizer, reference, reference_latents, mask, aug_generators, config,
             callback, quiet) -> EndToEndResult:  # fmt: skip
    """The solver's iterations: run the chain, score the iterate, backpropagate the augmented loss, step."""
    initial_norm = z_t.detach().flatten(1).norm(dim=1)
    augment = Cutouts(config.cutouts, config.cut_power, config.noise_sd) if config.cutouts > 0 else None
    weights = config.loss_weights()
    history, stopped = _History(), False
    bar = tqdm(total=config.iterations + 1, disable=quiet, desc="end-to-end", unit="it", dynamic_ncols=True)
    for it in range(config.iterations + 1):
        last = it == config.iterations
        with torch.set_grad_enabled(not last):  # the last iterate is only scored
            z0, x0s = chain.run(z_t, keep_last=0 if last else len(weights))
        with torch.no_grad():
            final = backbone.decode(z0.detach()).float().clamp(0, 1)
            if reference is None and it == 0:  # the plain sample is the regularisers' reference
                reference, reference_latents = final, z0.detach()
            loss, parts = objective.evaluate(Context(final, z0.detach(), reference, reference_latents, mask))
        info = history.record(z_t, final, loss, parts)
        bar.update(1)
        bar.set_postfix(
            loss=f"{info.losses.mean():.4g}", best=f"{torch.stack(history.losses).min(0).values.mean():.4g}"
        )
        if callback is not None:
            callback(info)
        if config.early_stop_loss is not None and bool((info.losses < config.early_stop_loss).all()):
            stopped = not last
            break
        if last:
            break
        total = 0
        for w, x0 in zip(weights, x0s, strict=True):
            step_ctx = Context(chain.decode(x0), x0, reference, reference_latents, mask, augment, aug_generators)
            total = total + w * objective(step_ctx)
        history.augmented.append(total.detach().float().cpu())
        optimizer.zero_grad()
        total.sum().backward()
        optimizer.step()
        if config.renormalize_latent:
            with torch.no_grad():
                z_t.mul_((initial_norm / z_t.flatten(1).norm(dim=1)).view(-1, *[1] * (z_t.dim() - 1)))
    bar.close()
    return history.result(chain, stopped)
