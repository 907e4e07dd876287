"""The universal solver: training-free guidance of sampling by any objective, per step (forward guidance).

At each sampling step t, for k = 1..K (self-recurrence):

    eps      = eps_theta(z_t, t, c)
    x0_hat   = (z_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    d        = objective(D(x0_hat))       (D: VAE decoder; feature decoding: loss(f(D(x0_hat)), f*), f the network)
    g        = grad_{z_t} d,  rescaled to ||eps||, clamped to mean +- thr * std
    eps_g    = eps + w_g * g
    Delta    = argmin over Delta of objective(D(x0_g + Delta)), approximately: m Adam steps from 0
    eps_g    = eps_g - sqrt(abar_t / (1 - abar_t)) Delta   (backward guidance, where m > 0; x0_g: x0 of eps_g)
    z_{t-1}  = scheduler step with eps_g               (DDPM ancestral or DDIM)
    z_t      = sqrt(abar_t / abar_{t-1}) z_{t-1} + sqrt(1 - abar_t / abar_{t-1}) n   (if k < K)

The best image over every (t, k, before/after guidance) is kept. See docs/methods/universal.md.

Beyond the published update (``featscope.solvers.pieces``, docs/speed.md): x0 guidance (mu > 0: N normalised
gradient steps on x0_g, applied through eps like backward guidance, no UNet pass); the step z_t -> z_{t-1} by
DPM-Solver++(2M) on the guided x0 (``sampler="dpmpp"``) or on a warped schedule (``schedule_power``); and
adaptive stopping (``patience``): a stopped sample leaves the batch and keeps its best image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torchvision.transforms.functional as TF
from diffusers.utils.torch_utils import randn_tensor

from featscope.backbones.base import Backbone
from featscope.errors import FeatscopeError
from featscope.objectives import Context, Objective
from featscope.progress import tqdm
from featscope.sampling import cfg_blend
from featscope.solvers.configs import UniversalConfig
from featscope.solvers.pieces import (
    Patience,
    dpmpp_step,
    soft_threshold_in_adam_metric,
    warped_timesteps,
    x0_guidance,
)


# -- the pieces of one update (each checked against a hand computation in the tests) ----------
def rescale_to(grad: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scale each sample's gradient so its Frobenius norm equals that of ``reference`` (eps)."""
    dims = tuple(range(1, grad.dim()))
    g_norm = grad.flatten(1).norm(dim=1).view(-1, *[1] * len(dims))
    r_norm = reference.flatten(1).norm(dim=1).view(-1, *[1] * len(dims))
    return grad * (r_norm / g_norm.clamp_min(1e-30))


def clamp_by_std(grad: torch.Tensor, threshold: float) -> torch.Tensor:
    """Element-wise clamp of each sample to [mean - thr * std, mean + thr * std] (off when thr <= 0)."""
    if threshold <= 0:
        return grad
    flat = grad.flatten(1)
    mean, std = flat.mean(1), flat.std(1)
    shape = (-1,) + (1,) * (grad.dim() - 1)
    low, high = (mean - threshold * std).view(shape), (mean + threshold * std).view(shape)
    return torch.maximum(torch.minimum(grad, high), low)


def straight_through_clamp(images: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] in the forward pass (what a saved image holds), identity gradient backward."""
    return images + (images.clamp(0, 1) - images).detach()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur each channel of (B, C, H, W) with a Gaussian of ``sigma`` pixels (kernel 2 ceil(2 sigma) + 1)."""
    if sigma <= 0:
        return x
    size = 2 * math.ceil(2 * sigma) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])


def backward_delta(
    x0: torch.Tensor,
    distance: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    lr: float,
    blur: float = 0.0,
    sparsity: float = 0.0,
) -> torch.Tensor:
    """Backward guidance: Delta ~ argmin_Delta distance(x0 + Delta), by ``steps`` Adam steps from 0.

    With ``blur`` > 0, Delta = G_blur * theta and Adam moves theta: Delta stays spatially smooth, so the
    steps cannot add pixel-level speckle. With ``sparsity`` s > 0, each Adam step is followed by the proximal
    step of an L1 penalty lambda |theta|_1 in Adam's metric (a soft threshold of lr lambda / (sqrt(v_hat) + eps)
    per element), lambda = s times the sample's RMS gradient at that step: elements whose gradient stays
    below s RMS do not move, so the change goes where the network looks, not over the whole background.
    ``distance`` returns one value per sample; Adam's moments are element-wise, so each sample's Delta
    depends only on its own loss. Non-finite gradients are zeroed.
    """
    theta = torch.zeros_like(x0, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        (grad,) = torch.autograd.grad(distance(x0 + gaussian_blur(theta, blur)).sum(), theta)
        theta.grad = grad.nan_to_num(0.0, 0.0, 0.0)
        optimizer.step()
        if sparsity > 0:
            soft_threshold_in_adam_metric(theta, optimizer, sparsity)
    with torch.no_grad():
        return gaussian_blur(theta, blur).detach()


def renoise(z_prev: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward diffusion from the previous step back to t: q(z_t | z_prev) (self-recurrence)."""
    ratio = abar_t / abar_prev
    return ratio.sqrt() * z_prev + (1 - ratio).sqrt() * noise


@dataclass
class StepInfo:
    """What a step callback receives after each sampling step (distances are the objective's values)."""

    step: int
    timestep: int
    distance: torch.Tensor  # per sample, last pre-guidance objective value at this step
    best_distance: torch.Tensor
    x0: torch.Tensor  # guided x0 estimate as images in [0, 1]
    grad_norm: torch.Tensor
    skipped: int  # samples whose guidance was skipped (non-finite loss or gradient)
    first_sample: int = 0  # index of the batch's first sample in a run of several batches


StepCallback = Callable[[StepInfo], None]
Logger = Callable[[dict], None]


@dataclass
class SolverOutput:
    final: torch.Tensor  # (B, 3, H, W) in [0, 1]
    best: torch.Tensor
    best_where: list[dict] = field(default_factory=list)
    evaluations: int | float = 0  # network evaluations per sample (a mean with adaptive stopping)
    stopped_early: bool = False
    unet_equivalents: int | float = 0  # UNet-forward-equivalents per sample (backward = 2 forwards)


class _BestTracker:
    def __init__(self, batch: int) -> None:
        self.distance = torch.full((batch,), math.inf)
        self.images: torch.Tensor | None = None
        self.where: list[dict] = [{} for _ in range(batch)]

    def update(self, distance: torch.Tensor, images: torch.Tensor, rows: torch.Tensor | None = None, **where) -> None:
        """Keep the images nearer than the best so far; ``rows``: the tracked rows these are (default: all)."""
        distance = distance.detach().float().cpu()
        rows = torch.arange(len(distance)) if rows is None else rows.cpu()
        better = torch.isfinite(distance) & (distance < self.distance[rows])
        if self.images is None:
            self.images = images.detach().clone()
        if better.any():
            idx = better.nonzero().flatten()
            self.images[rows[idx].to(images.device)] = images.detach()[idx.to(images.device)]
            self.distance[rows[idx]] = distance[idx]
            for i, row in zip(idx.tolist(), rows[idx].tolist(), strict=True):
                self.where[row] = dict(where, distance=float(distance[i]))

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows (the selected candidates), in this order."""
        self.distance = self.distance[rows.cpu()]
        self.images = self.images[rows.to(self.images.device)] if self.images is not None else None
        self.where = [self.where[i] for i in rows.tolist()]


def leading_rows(distance: torch.Tensor, rows_per_image: int) -> torch.Tensor:
    """Index of each image's candidate with the smallest distance, in a batch of consecutive candidates."""
    distance = distance.detach().float().cpu().nan_to_num(nan=math.inf).view(-1, rows_per_image)
    return distance.argmin(1) + torch.arange(distance.shape[0]) * rows_per_image


def resampled_rows(distance: torch.Tensor, rows_per_image: int, temperature: float) -> torch.Tensor:
    """Systematic resampling of each image's consecutive candidates: weights proportional to
    exp(-d / (temperature * mean d)) over the image's candidates, positions (j + 1/2) / rows; the rows kept, in
    order (a row may repeat). Deterministic, so that a sample's result does not depend on a random draw."""
    d = distance.detach().float().cpu().nan_to_num(nan=math.inf).view(-1, rows_per_image)
    finite = torch.isfinite(d)
    scale = torch.where(finite, d, torch.zeros_like(d)).sum(1, keepdim=True) / finite.sum(1, keepdim=True).clamp(min=1)
    logits = torch.where(finite, -d / (temperature * scale.clamp(min=1e-12)), torch.full_like(d, -math.inf))
    logits = torch.where(finite.any(1, keepdim=True), logits, torch.zeros_like(logits))  # all lost: keep all
    cumulative = logits.softmax(1).cumsum(1)
    positions = (torch.arange(rows_per_image, dtype=torch.float32) + 0.5) / rows_per_image
    picks = torch.searchsorted(cumulative, positions.expand_as(cumulative).contiguous()).clamp(max=rows_per_image - 1)
    return (picks + torch.arange(d.shape[0]).view(-1, 1) * rows_per_image).flatten()


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class _Iteration:
    """What one guided iteration leaves: the guided eps and x0 estimate, and its numbers per row."""

    eps: torch.Tensor
    x0: torch.Tensor
    loss: torch.Tensor  # the objective before guidance
    grad_norm: torch.Tensor
    skipped: int


class _GuidedSampling:
    """The state of one solve: each row's chain (all candidates of each sample until the selection), its
    conditioning and generators, the best image so far and the network evaluations counted."""

    def __init__(
        self,
        backbone: Backbone,
        objective: Objective,
        config: UniversalConfig,
        generators: list[torch.Generator],
        dtype: torch.dtype,
    ) -> None:
        self.backbone, self.objective, self.config, self.dtype = backbone, objective, config, dtype
        self.grad_clip = config.clip_threshold([getattr(net, "guidance_clip", None) for net in objective.networks])
        self.device = backbone.device
        self.generators, self.batch, self.rows = list(generators), len(generators), config.candidates
        self.row_generators = [g for g in generators for _ in range(self.rows)]
        self.index = torch.arange(self.batch, device=self.device).repeat_interleave(self.rows)
        self.cond = self.uncond = None
        if backbone.has_prompts:
            self.cond = backbone.encode_prompt([config.prompt] * self.batch * self.rows)
            if config.guidance_scale != 1.0:
                self.uncond = backbone.encode_prompt([""] * self.batch * self.rows)
        self.best = _BestTracker(self.batch * self.rows)
        self.evaluated = 0  # network passes, summed over rows
        self.unet_evaluated = 0  # UNet-forward-equivalents, summed over rows (a backward pass = 2 forwards)
        self.sel: torch.Tensor | None = None  # the rows still sampling (adaptive stopping); None = all

    @property
    def evaluations(self) -> int | float:
        """Network evaluations per image (a mean where adaptive stopping ended some images early)."""
        return _per_image(self.evaluated, self.batch)

    @property
    def unet_equivalents(self) -> int | float:
        """UNet-forward-equivalents per image (UniversalConfig.unet_equivalents for a full run)."""
        return _per_image(self.unet_evaluated, self.batch)

    def pick(self, rows: torch.Tensor | None) -> torch.Tensor | None:
        """The rows of a per-row tensor that are still sampling."""
        return rows if rows is None or self.sel is None else rows[self.sel.to(rows.device)]

    def predict_eps(self, z_in: torch.Tensor, t: int) -> torch.Tensor:
        with _autocast(self.device, self.dtype):
            eps = self.backbone.eps(z_in, t, self.pick(self.cond))
            if self.uncond is not None:
                eps_u = self.backbone.eps(z_in, t, self.pick(self.uncond))
                eps = cfg_blend(eps_u, eps, self.config.guidance_scale)
        return eps.float()

    def loss_of(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective per row on the decoded x0 estimate, and those images (fp32)."""
        with _autocast(self.device, self.dtype):
            images = self.backbone.decode(x0)
            if self.config.clamp:
                images = straight_through_clamp(images)
            loss = self.objective(Context(images, x0, index=self.pick(self.index)))
        return loss.float(), images.float()

    def forward_guidance(
        self, z_in: torch.Tensor, eps: torch.Tensor, loss: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """eps + w_g * clamp(rescaled grad), rows with a non-finite loss or gradient left unguided."""
        grad = torch.autograd.grad(loss.sum(), z_in)[0]
        finite = torch.isfinite(grad.flatten(1)).all(1) & torch.isfinite(loss.detach())
        grad = torch.where(finite.view(-1, 1, 1, 1), grad, torch.zeros_like(grad))
        guided = clamp_by_std(rescale_to(grad, eps), self.grad_clip)
        eps_guided = torch.where(finite.view(-1, 1, 1, 1), eps + self.config.guidance_weight * guided, eps)
        return eps_guided, grad.flatten(1).norm(dim=1), int((~finite).sum())

    def iterate(self, z: torch.Tensor, i: int, t: int, k: int, abar_t: torch.Tensor) -> _Iteration:
        """One iteration at step i on the rows still sampling: forward guidance, backward guidance where m > 0,
        x0 guidance where mu > 0, best-image tracking."""
        config, backbone, guided = self.config, self.backbone, self.config.guidance_weight > 0
        rows, where = z.shape[0], {"step": i, "timestep": t, "k": k}
        z_in = z.detach().requires_grad_(guided)
        with torch.set_grad_enabled(guided):
            eps = self.predict_eps(z_in, t)
            x0 = backbone.x0_from_eps(z_in, t, eps)
            loss, images = self.loss_of(x0)
        self.evaluated += rows
        self.unet_evaluated += rows * (1 + (self.uncond is not None)) * (1 + 2 * guided)
        self.best.update(loss, images, self.sel, **where, after_guidance=False)
        eps = eps.detach()
        if guided:
            eps_guided, grad_norm, skipped = self.forward_guidance(z_in, eps, loss)
        else:
            eps_guided, grad_norm, skipped = eps, torch.zeros(z.shape[0]), 0
        z = z.detach()
        x0_guided = backbone.x0_from_eps(z, t, eps_guided)
        m_steps = config.backward_at(i)
        if m_steps:
            with torch.enable_grad():
                delta = backward_delta(
                    x0_guided,
                    lambda x: self.loss_of(x)[0],
                    m_steps,
                    config.backward_lr,
                    config.backward_blur,
                    config.backward_sparsity,
                )
            self.evaluated += rows * m_steps
            eps_guided = eps_guided - (abar_t / (1 - abar_t)).sqrt() * delta
            x0_guided = backbone.x0_from_eps(z, t, eps_guided)
        if config.x0_at(i):
            with torch.enable_grad():
                delta = self.x0_delta(x0_guided, config.x0_at(i), where)
            self.evaluated += rows * config.x0_at(i)
            eps_guided = eps_guided - (abar_t / (1 - abar_t)).sqrt() * delta
            x0_guided = backbone.x0_from_eps(z, t, eps_guided)
        if config.tracked_at(i):
            with torch.no_grad():
                loss_after, images_after = self.loss_of(x0_guided)
            self.evaluated += rows
            self.best.update(loss_after, images_after, self.sel, **where, after_guidance=True)
        return _Iteration(eps_guided, x0_guided, loss, grad_norm, skipped)

    def x0_delta(self, x0: torch.Tensor, steps: int, where: dict) -> torch.Tensor:
        """x0 guidance's change of x0; every point its inner steps evaluate is tracked for the best image."""
        seen: dict[str, torch.Tensor] = {}

        def distance(x: torch.Tensor) -> torch.Tensor:
            loss, seen["images"] = self.loss_of(x)
            return loss

        def track(_: torch.Tensor, loss: torch.Tensor) -> None:
            self.best.update(loss, seen["images"], self.sel, **where, after_guidance=True)

        return x0_guidance(x0, distance, steps, self.config.x0_weight, on_evaluation=track)

    def select(
        self, i: int, z: torch.Tensor, last: _Iteration, log: Logger | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep each sample's candidate nearest the objective after step i: the kept rows of z, and which they are."""
        shown = leading_rows(last.loss, self.rows)
        if log is not None:
            candidate_distances = last.loss.detach().float().cpu().view(self.batch, self.rows).tolist()
            log({"event": "candidates_selected", "step": i, "kept": (shown % self.rows).tolist(),
                 "distances": candidate_distances})  # fmt: skip
        self._reorder(shown, last)
        self.row_generators, self.rows = list(self.generators), 1
        return z[shown.to(self.device)], shown

    def resample(
        self, i: int, z: torch.Tensor, last: _Iteration, log: Logger | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Resample each sample's particles at step i, before its transition (:func:`resampled_rows`): the new z
        and the rows kept."""
        keep = resampled_rows(last.loss, self.rows, self.config.resample_temperature)
        if log is not None:
            log({"event": "particles_resampled", "step": i,
                 "parents": (keep % self.rows).view(self.batch, self.rows).tolist(),
                 "distances": last.loss.detach().float().cpu().view(self.batch, self.rows).tolist()})  # fmt: skip
        self._reorder(keep, last)
        return z[keep.to(self.device)], keep

    def _reorder(self, keep: torch.Tensor, last: _Iteration) -> None:
        """Rows ``keep`` (each image's own) of everything a row carries: conditioning, last iteration, best image."""
        rows = keep.to(self.device)
        self.index, last.x0, last.eps, last.loss = self.index[rows], last.x0[rows], last.eps[rows], last.loss[rows]
        self.cond = self.cond[rows] if self.cond is not None else None
        self.uncond = self.uncond[rows] if self.uncond is not None else None
        last.grad_norm = last.grad_norm[keep.to(last.grad_norm.device)]
        self.best.keep(keep)

    def shown(self, last: _Iteration) -> torch.Tensor:
        """The row shown for each sample: its leading candidate until the selection."""
        return leading_rows(last.loss, self.rows) if self.rows > 1 else torch.arange(self.batch)

    def report(
        self, i: int, t: int, last: _Iteration, tic: float, log: Logger | None, callback: StepCallback | None
    ) -> None:
        """The step's log record and callback, for each sample's shown row."""
        shown = self.shown(last)
        if log is not None:
            log(
                {
                    "step": i,
                    "timestep": t,
                    "K": self.config.recurrence_at(i),
                    "distance": last.loss.detach().cpu()[shown].tolist(),
                    "best_distance": self.best.distance[shown].tolist(),
                    "grad_norm": last.grad_norm.cpu()[shown].tolist(),
                    "skipped": last.skipped,
                    "time": round(time.time() - tic, 3),
                }
            )
        if callback is not None:
            with torch.no_grad():
                x0_images = self.backbone.decode(last.x0[shown.to(self.device)]).float().clamp(0, 1)
            callback(
                StepInfo(i, t, last.loss.detach().cpu()[shown], self.best.distance[shown].clone(), x0_images,
                         last.grad_norm.cpu()[shown], last.skipped)
            )  # fmt: skip

    def reached(self, stop: float | None) -> bool:
        """Whether every sample's best objective value is at most ``stop``."""
        if stop is None:
            return False
        return bool((self.best.distance.view(self.batch, self.rows).min(1).values <= stop).all())


def _per_image(total: int, batch: int) -> int | float:
    per_image = total / batch
    return int(per_image) if per_image == int(per_image) else per_image


def _log_skipped(log: Logger | None, i: int, t: int, k: int, skipped: int) -> None:
    if skipped and log is not None:
        log({"event": "guidance_skipped", "step": i, "timestep": t, "k": k, "samples": skipped,
             "reason": "non-finite loss or gradient"})  # fmt: skip


class _Stepper:
    """The sampler's step from t to the next timestep: the diffusers scheduler (ddpm; ddim on the model's
    spacing) or DPM-Solver++ on the guided x0 (dpmpp, order 2; ddim with a warped schedule, order 1)."""

    def __init__(self, backbone: Backbone, config: UniversalConfig) -> None:
        kind = "ddpm" if config.sampler == "ddpm" else "ddim"
        self.scheduler = backbone.make_scheduler(kind, config.num_steps)
        self.final_abar = torch.as_tensor(
            float(getattr(self.scheduler, "final_alpha_cumprod", 1.0)), device=backbone.device
        )
        self.timesteps = [int(t) for t in self.scheduler.timesteps]
        if config.schedule_power != 1:
            self.timesteps = warped_timesteps(self.timesteps[0], config.num_steps, config.schedule_power)
            if self.timesteps[-1] < 0:
                raise FeatscopeError(
                    f"{config.num_steps} steps do not fit a schedule of power {config.schedule_power}; "
                    "use fewer steps or a smaller --schedule-power"
                )
        self.explicit = config.sampler == "dpmpp" or config.schedule_power != 1
        self.order = 2 if config.sampler == "dpmpp" else 1
        clip = self.scheduler.config.clip_sample
        self.clip = float(self.scheduler.config.clip_sample_range) if clip else None
        self.history: tuple[torch.Tensor, torch.Tensor] | None = None  # (x0 of every row, abar) at the last step
        self.abar = backbone.alphas_cumprod.to(backbone.device)
        self.ddim_stride = None if self.explicit or kind != "ddim" else backbone.num_train_timesteps // config.num_steps

    def landing(self, i: int) -> torch.Tensor:
        """abar of the level that step i moves to: the next timestep, or where diffusers' DDIM step lands,
        t - T // N (one index off the next timestep with trailing spacing where N does not divide T)."""
        if self.ddim_stride is not None:
            t_prev = self.timesteps[i] - self.ddim_stride
            return self.abar[t_prev] if t_prev >= 0 else self.final_abar
        return self.abar[self.timesteps[i + 1]] if i + 1 < len(self.timesteps) else self.final_abar

    def step(
        self,
        last: _Iteration,
        t: int,
        z: torch.Tensor,
        abar_t: torch.Tensor,
        abar_s: torch.Tensor,
        generators: list[torch.Generator],
        rows: torch.Tensor | None,
        keep: bool,
    ) -> torch.Tensor:
        """z at the next timestep for these ``rows`` (None = all); ``keep``: remember this x0 for order 2."""
        if not self.explicit:
            return self.scheduler.step(last.eps, t, z, generator=generators).prev_sample
        x0 = last.x0 if self.clip is None else last.x0.clamp(-self.clip, self.clip)
        previous = None
        if self.order == 2 and self.history is not None:
            x0_all, abar_before = self.history
            previous = (x0_all if rows is None else x0_all[rows.to(x0_all.device)], abar_before)
        z_s = dpmpp_step(z, x0, abar_t, abar_s, previous)
        if keep and self.order == 2:
            x0_all = x0.detach().clone() if self.history is None or rows is None else self.history[0].clone()
            if rows is not None:
                x0_all[rows.to(x0_all.device)] = x0.detach()
            self.history = (x0_all, abar_t)
        return z_s

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the multistep history (the selected candidates), in this order."""
        if self.history is not None:
            x0_all, abar_before = self.history
            self.history = (x0_all[rows.to(x0_all.device)], abar_before)


def solve_universal(
    backbone: Backbone,
    objective: Objective,
    config: UniversalConfig,
    *,
    generators: list[torch.Generator],
    dtype: torch.dtype = torch.float32,
    callback: StepCallback | None = None,
    log: Logger | None = None,
    quiet: bool = False,
) -> SolverOutput:
    """Minimise ``objective`` (per sample, e.g. :func:`~featscope.objectives.feature_match`) by guided sampling.

    ``generators`` holds one seeded generator per sample: a sample's result does not depend on
    the other samples in the batch. ``dtype`` (fp16/bf16) runs the networks under autocast; the
    gradient rescale and the sampler state stay in fp32. With ``config.candidates`` > 1 each sample
    starts that many trajectories (drawn in turn from its generator) and keeps the one with the lowest
    objective on its x0 estimate after ``config.select_after`` steps; the objective's context then
    carries ``index`` (the sample of each row). Callbacks and logs show each sample's leading candidate.
    """
    config.validate()
    device = backbone.device
    run = _GuidedSampling(backbone, objective, config, generators, dtype)
    stepper = _Stepper(backbone, config)
    timesteps = stepper.timesteps
    abar = backbone.alphas_cumprod.to(device)
    z = randn_tensor((run.batch * run.rows, *backbone.latent_shape), generator=run.row_generators, device=device)
    z = z * stepper.scheduler.init_noise_sigma
    stopped, patience = False, Patience(run.batch, config.patience)
    bar = tqdm(total=config.total_iterations(), disable=quiet, desc="decode", unit="it", dynamic_ncols=True)
    tic = time.time()
    for i, t in enumerate(timesteps):
        abar_t = abar[t]
        abar_prev = stepper.landing(i)
        k_steps = config.recurrence_at(i)
        rows = None if bool(patience.active.all()) else patience.active.nonzero().flatten()
        run.sel = rows
        gens = run.row_generators if rows is None else [run.row_generators[j] for j in rows.tolist()]
        z_rows = z if rows is None else z[rows.to(device)]
        for k in range(k_steps):
            last = run.iterate(z_rows, i, t, k, abar_t)
            z_rows = z_rows.detach()
            if k == k_steps - 1 and rows is None and config.resamples_at(i):
                z_rows, kept = run.resample(i, z_rows, last, log)
                stepper.keep(kept)
            z_prev = stepper.step(last, t, z_rows, abar_t, abar_prev, gens, rows, k == k_steps - 1)
            if k < k_steps - 1:
                noise = randn_tensor(z_rows.shape, generator=gens, device=device, dtype=z_rows.dtype)
                z_rows = renoise(z_prev, abar_t, abar_prev, noise)
            else:
                z_rows = z_prev
            bar.update(run.rows)
            bar.set_postfix(step=f"{i + 1}/{len(timesteps)}", dist=f"{last.loss.detach().mean().item():.4g}",
                            best=f"{run.best.distance.mean().item():.4g}")  # fmt: skip
            _log_skipped(log, i, t, k, last.skipped)
        if rows is None:
            z = z_rows
        else:
            z = z.clone()
            z[rows.to(device)] = z_rows
        if run.rows > 1 and i == config.select_after - 1:
            z, kept = run.select(i, z, last, log)
            stepper.keep(kept)
        if rows is None:
            run.report(i, t, last, tic, log, callback)
        patience.update(run.best.distance)
        if run.reached(config.stop_distance) or not patience.active.any():
            stopped = True
            break
    bar.close()
    run.sel = None
    if run.rows > 1:  # stopped before the selection: each image's best candidate
        run.best.keep(leading_rows(run.best.distance, run.rows))
    best = run.best.images.clamp(0, 1)
    with torch.no_grad():
        final = backbone.decode(z).float().clamp(0, 1) if not stopped else best
    final = torch.where(patience.active.to(device).view(-1, 1, 1, 1), final, best)
    return SolverOutput(final, best, run.best.where, run.evaluations, stopped, run.unet_equivalents)
