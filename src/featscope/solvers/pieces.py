"""Pieces of the universal solver's design space beyond the published decoder (each tested by hand).

- ``warped_timesteps``: a step schedule t_i = t_max (1 - i/T)^rho (rho > 1: more steps near the clean image).
- ``dpmpp_step``: DPM-Solver++(2M) (Lu et al. 2022) in data prediction, eta 0; order 1 is DDIM.
- ``x0_guidance``: manifold-preserving guidance (MPGD, He et al. 2024; TFG's mean guidance on x0): normalised
  gradient steps on the clean estimate x0, no UNet backward pass.
- ``soft_threshold_in_adam_metric``: an L1 artifact penalty on backward guidance's change (a proximal step
  after each Adam step), so that only the elements with a large gradient move.
- ``Patience``: adaptive per-sample stopping once a sample's best distance stops improving.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

IMPROVEMENT = 0.01  # a best distance that drops by less than 1% is no improvement (adaptive stopping)


def warped_timesteps(t_max: int, num_steps: int, power: float) -> list[int]:
    """t_i = round(t_max (1 - i / T)^power) for i = 0..T-1, made strictly decreasing (each at least one below
    the one before); power 1 is even spacing from t_max."""
    steps: list[int] = []
    for i in range(num_steps):
        t = round(t_max * (1 - i / num_steps) ** power)
        steps.append(t if not steps else min(t, steps[-1] - 1))
    return steps


def _log_snr(abar: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma) = log(abar / (1 - abar)) / 2."""
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def dpmpp_step(
    z_t: torch.Tensor,
    x0: torch.Tensor,
    abar_t: torch.Tensor,
    abar_s: torch.Tensor,
    previous: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One DPM-Solver++ step from t to s (s less noisy) with the data prediction ``x0``.

    z_s = (sigma_s / sigma_t) z_t + (alpha_s - sigma_s alpha_t / sigma_t) D, with D = x0 (order 1 = DDIM), or
    with ``previous`` = (x0 at the step before t, abar there) D = (1 + 1/(2r)) x0 - x0_prev / (2r),
    r = h_prev / h (order 2, multistep). Order 1 where r is not finite and positive, and on the last step
    (sigma_s = 0), as DPM-Solver++ does.
    """
    alpha_t, sigma_t = abar_t.sqrt(), (1 - abar_t).sqrt()
    alpha_s, sigma_s = abar_s.sqrt(), (1 - abar_s).sqrt()
    d = x0
    if previous is not None and float(sigma_s) > 0:
        x0_prev, abar_prev = previous
        h = _log_snr(abar_s) - _log_snr(abar_t)
        r = float((_log_snr(abar_t) - _log_snr(abar_prev)) / h)
        if math.isfinite(r) and r > 0:
            d = (1 + 1 / (2 * r)) * x0 - x0_prev / (2 * r)
    return (sigma_s / sigma_t) * z_t + (alpha_s - sigma_s * alpha_t / sigma_t) * d


def rms_per_sample(x: torch.Tensor) -> torch.Tensor:
    """Each sample's root mean square, shaped to broadcast against ``x``."""
    return x.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (x.dim() - 1))


def unit_rms(grad: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient divided by its root mean square (zero stays zero)."""
    return grad / rms_per_sample(grad).clamp_min(1e-30)


def x0_guidance(
    x0: torch.Tensor,
    distance: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    weight: float,
    on_evaluation: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Delta after ``steps`` normalised gradient steps on x0: x_{j+1} = x_j - weight * g_j / rms(g_j), g_j the
    gradient of ``distance`` (one value per sample) at x_j; x_0 = x0. One network evaluation per step, no UNet
    pass. ``on_evaluation(x_j, distance)`` sees each evaluated point (for best-image tracking). Non-finite
    gradients are zeroed."""
    x = x0.detach()
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        values = distance(x)
        (grad,) = torch.autograd.grad(values.sum(), x)
        if on_evaluation is not None:
            on_evaluation(x.detach(), values.detach())
        x = x.detach() - weight * unit_rms(grad.nan_to_num(0.0, 0.0, 0.0))
    return x - x0.detach()


@torch.no_grad()
def soft_threshold_in_adam_metric(theta: torch.Tensor, optimizer: torch.optim.Adam, sparsity: float) -> None:
    """theta <- sign(theta) max(|theta| - lr lambda / (sqrt(v_hat) + eps), 0), lambda = ``sparsity`` times each
    sample's RMS of the last gradient: the L1 proximal step after an Adam step (``backward_delta``)."""
    group, state = optimizer.param_groups[0], optimizer.state[theta]
    beta2, step = group["betas"][1], float(state["step"])
    denom = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt() + group["eps"]
    threshold = group["lr"] * sparsity * rms_per_sample(theta.grad) / denom
    theta.copy_(theta.sign() * (theta.abs() - threshold).clamp_min(0))


class Patience:
    """Adaptive per-sample stopping: a sample is done once its best distance has not dropped by more than
    ``IMPROVEMENT`` (relative) for ``steps`` sampling steps in a row; 0 steps = never."""

    def __init__(self, batch: int, steps: int) -> None:
        self.steps = steps
        self.anchor = torch.full((batch,), math.inf)  # best distance at the last improvement
        self.waited = torch.zeros(batch, dtype=torch.long)
        self.active = torch.ones(batch, dtype=torch.bool)

    def update(self, best: torch.Tensor) -> None:
        """Count a finished sampling step, given each sample's best distance so far."""
        if self.steps <= 0:
            return
        best = best.detach().float().cpu()
        improved = best < self.anchor * (1 - IMPROVEMENT)
        self.anchor = torch.where(improved, best, self.anchor)
        self.waited = torch.where(improved, torch.zeros_like(self.waited), self.waited + 1)
        self.active &= self.waited < self.steps
