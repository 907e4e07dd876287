"""On-policy denoising targets: the states a world model's own sampler visits, labelled by the pool's Bayes denoiser.

Plain training draws x_t from the forward process (a real image plus noise). A sampler instead visits
states built from the model's own earlier x0 estimates, which at high noise are blurry averages; a
denoiser that is accurate on forward states can still be wrong on those, and there the size of the
object is decided (docs/world.md). Training on the visited states with :class:`PoolPosterior` labels
(the exact minimiser of the loss on the training pool) corrects the model where the sampler needs it,
as DAgger corrects a policy on the states it reaches itself.
"""

from __future__ import annotations

import copy

import torch
from diffusers.training_utils import EMAModel
from torch import nn

from featscope.backbones.base import Backbone
from featscope.world.posterior import PoolPosterior
from featscope.world.text import WorldPromptEncoder

ROLLOUT_STEPS = 50  # DDIM grid of the rollouts; each grid interval also yields one state at a random t inside it


class SamplerStates:
    """A buffer of unconditional DDIM states at t >= ``high_from`` of the current EMA weights, with Bayes x0.

    ``refresh`` rolls ``chains`` trajectories from pure noise (empty caption) down to ``high_from`` and keeps,
    for every grid step t_k in the band, the state at t_k and one at a random t between t_k and the next grid
    step (the state a finer DDIM grid passes through with the same x0 estimate). ``draw`` samples rows.
    """

    def __init__(
        self,
        unet: nn.Module,
        text: nn.Module,
        scheduler_config: dict,
        posterior: PoolPosterior,
        *,
        high_from: int,
        chains: int = 64,
    ) -> None:
        self.rollout_unet, self.rollout_text = copy.deepcopy(unet), copy.deepcopy(text)
        self.backbone = Backbone(
            self.rollout_unet,
            scheduler_config,
            spec="world:training-rollout",
            prompt_encoder=WorldPromptEncoder(self.rollout_text),
        )
        self.posterior = posterior
        self.high_from = high_from
        self.chains = chains
        self.x_t = self.t = self.x0 = None
        self.model_gap: dict[int, float] = {}

    @torch.no_grad()
    def refresh(self, ema: EMAModel, gen: torch.Generator) -> None:
        """Roll out the EMA weights and relabel; ``model_gap`` then holds, per grid timestep, the mean squared
        distance of the rolled-out model's x0 estimate to the Bayes one on those states (before training)."""
        ema.copy_to(list(self.rollout_unet.parameters()) + list(self.rollout_text.parameters()))
        backbone, alphas = self.backbone, self.backbone.alphas_cumprod
        scheduler = backbone.make_scheduler("ddim", ROLLOUT_STEPS)
        cond = backbone.encode_prompt([""] * self.chains)
        z = torch.randn((self.chains, *backbone.latent_shape), generator=gen)
        grid = [int(t) for t in scheduler.timesteps]
        grid_states, between_states, grid_times, between_times, model_x0 = [], [], [], [], []
        for t, t_next in zip(grid, grid[1:] + [-1], strict=True):
            if t < self.high_from:
                break
            eps = backbone.eps(z, t, cond)
            step = scheduler.step(eps, t, z)
            x0 = step.pred_original_sample
            low = max(t_next + 1, self.high_from)
            between = torch.randint(low, t + 1, (self.chains,), generator=gen)
            a = alphas[between].view(-1, 1, 1, 1)
            grid_states.append(z)
            between_states.append(a.sqrt() * x0 + (1 - a).sqrt() * eps)
            grid_times.append(torch.full((self.chains,), t))
            between_times.append(between)
            model_x0.append(x0)
            z = step.prev_sample
        self.x_t = torch.cat(grid_states + between_states)
        self.t = torch.cat(grid_times + between_times)
        self.x0 = self.posterior.x0(self.x_t, alphas[self.t], [{}] * len(self.t))
        gaps = (torch.cat(model_x0) - self.x0[: len(model_x0) * self.chains]).pow(2).flatten(1).mean(1)
        self.model_gap = {t: float(gap.mean()) for t, gap in zip(grid, gaps.split(self.chains), strict=False)}

    def draw(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` random (x_t, t, Bayes x0) rows of the buffer."""
        rows = torch.randint(0, len(self.t), (n,), generator=gen)
        return self.x_t[rows], self.t[rows], self.x0[rows]
