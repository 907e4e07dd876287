"""DiG-IN's start of a counterfactual: the best word swap, which the optimisation then runs from.

The class word of each caption is replaced by the target class word
(:func:`~featscope.investigate.word_edits.swap_word`) and the inverted image is regenerated with the edited
caption while, for the first ``round(tau * T)`` of the T steps, its cross-attention probabilities are the source
caption's (recorded once from the source regeneration and mapped to the edited tokens, prompt-to-prompt's word
swap), and for the first ``round(blend * T)`` steps the source's latents are blended in outside the foreground
mask (``z = m z + (1 - m) z_source``). Of the combinations of ``taus`` (DiG-IN: 0.3, 0.4, 0.5 of 20 steps) and
``blends`` (none or 0.3), each image keeps the one whose image has the lowest non-augmented loss (the class loss
plus the regularisers), and the end-to-end optimisation runs with that edit at every iteration, so its
iteration 0 is that word swap.

:class:`WordSwapStart` is the edit (a :class:`~featscope.solvers.endtoend.StepEdit`); :func:`best_word_swap`
searches it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from featscope.errors import FeatscopeError
from featscope.investigate.attention import explicit_attention, on_cross_attention
from featscope.investigate.settings import DIG_IN_BLENDS, DIG_IN_TAUS

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a core runs
    from featscope.backbones.base import Backbone
    from featscope.objectives import Objective
    from featscope.solvers.configs import EndToEndConfig


@dataclass
class SourceRun:
    """The source caption's regeneration of a batch: per cross-attention layer and step, the conditional
    probabilities (B * heads, N, L), and the state after each step (B, C, h, w)."""

    attention: dict[str, list[torch.Tensor]]
    latents: list[torch.Tensor]


class _LayerHook:
    """One cross-attention layer's processor: diffusers' attention with its probabilities passed to the owner."""

    def __init__(self, owner, name: str) -> None:
        self.edit = functools.partial(owner.edit, name)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, edit=self.edit)


def _hooked(unet: torch.nn.Module, owner):
    """``owner.edit(layer, probs, batch)`` on every cross-attention layer of ``unet`` while held."""
    return on_cross_attention(unet, by_layer=lambda name: _LayerHook(owner, name))


class _Recorder:
    """Keeps the conditional half of every cross-attention layer's probabilities for the first ``steps`` steps."""

    def __init__(self, steps: int) -> None:
        self.steps, self.step = steps, 0
        self.attention: dict[str, list[torch.Tensor]] = {}

    def edit(self, name: str, probs: torch.Tensor, batch: int) -> torch.Tensor:
        if self.step < self.steps:
            half = probs.view(batch, -1, *probs.shape[1:])[batch // 2 :]  # [unconditional, conditional]
            self.attention.setdefault(name, []).append(half.reshape(-1, *probs.shape[1:]).detach().clone())
        return probs


@torch.no_grad()
def record_source(backbone: Backbone, x_t: torch.Tensor, null_texts: torch.Tensor, prompts: Sequence[str], *,
                  guidance_scale: float, steps: int) -> SourceRun:  # fmt: skip
    """Regenerate the inverted batch (x_T (B, C, h, w), null texts (T, B, L, D)) with its source ``prompts``,
    recording the cross-attention of the first ``steps`` steps and every state."""
    from featscope.inversion import ddim_move, ddim_schedule, guided_eps, null_embeddings

    num_steps = len(null_texts)
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    cond = backbone.encode_prompt(list(prompts)).float()
    uncond = null_embeddings(backbone, len(x_t), num_steps, null_texts)
    z = x_t.to(backbone.device, torch.float32)
    recorder, latents = _Recorder(steps), []
    with _hooked(backbone.unet, recorder):
        for i, t in enumerate(schedule.timesteps):
            recorder.step = i
            z, _ = ddim_move(z, guided_eps(backbone, z, t, cond, uncond[i], guidance_scale), schedule.abar[i],
                             schedule.abar_prev[i])  # fmt: skip
            latents.append(z)
    return SourceRun(recorder.attention, latents)


@dataclass
class WordSwapStart:
    """The word-swap edit of a batch of B chains: sample b re-injects the source's cross-attention (mapped by
    ``mappers[b]`` (L, L); the identity for a neuron counterfactual, which keeps its caption) while the step is
    below ``until[b]`` and blends the source's state into ``held[b]`` (1 = keep the source; at the latent's size:
    the background for a class counterfactual, the foreground for a neuron's) after each step below
    ``blend_until[b]``."""

    source: SourceRun
    mappers: torch.Tensor  # (B, L, L)
    until: list[int]
    blend_until: list[int]
    held: torch.Tensor | None  # (B, 1, h, w)
    step: int = 0

    def installed(self, backbone: Backbone):
        return _hooked(backbone.unet, self)

    def begin(self, i: int) -> None:
        self.step = i

    def edit(self, name: str, probs: torch.Tensor, batch: int) -> torch.Tensor:
        rows = [b for b, until in enumerate(self.until) if self.step < until]
        if not rows:
            return probs
        samples = len(self.until)
        if batch != 2 * samples:
            raise FeatscopeError(f"the word-swap start expects a guided batch of {2 * samples}, not {batch}")
        p = probs.view(batch, -1, *probs.shape[1:])
        source = self.source.attention[name][self.step].view(samples, -1, *probs.shape[1:])
        mapped = torch.einsum("bhnl,blm->bhnm", source.to(p), self.mappers.to(p))
        keep = torch.zeros(batch, 1, 1, 1, device=p.device, dtype=torch.bool)
        keep[[samples + b for b in rows]] = True
        padded = torch.cat([p[:samples], mapped])  # the unconditional half is never replaced
        return torch.where(keep, padded, p).view_as(probs)

    def after(self, i: int, z: torch.Tensor) -> torch.Tensor:
        if self.held is None:
            return z
        blend = torch.tensor([i < until for until in self.blend_until], device=z.device).view(-1, 1, 1, 1)
        if not bool(blend.any()):
            return z
        m = self.held.to(z) * blend
        return (1 - m) * z + m * self.source.latents[i].to(z)

    def choose(self, combos: Sequence[tuple[int, int]], picks: Sequence[int]) -> WordSwapStart:
        """This edit with sample b's (until, blend_until) the combination ``combos[picks[b]]``."""
        return replace(self, until=[combos[k][0] for k in picks], blend_until=[combos[k][1] for k in picks])


def latent_region(backbone: Backbone, mask: torch.Tensor | None, batch: int, *, foreground: bool = False
                  ) -> torch.Tensor | None:  # fmt: skip
    """The region a start holds to the source, at the size of the backbone's latent: 1 - the foreground ``mask``
    (B or 1, 1, H, W), or the mask itself (``foreground``); None without a mask."""
    if mask is None:
        return None
    size = tuple(backbone.latent_shape[-2:])
    region = F.interpolate(mask.float(), size=size, mode="area")
    return (region if foreground else 1 - region).expand(batch, -1, -1, -1).clamp(0, 1)


def best_word_swap(
    backbone: Backbone,
    objective: Objective,
    optimize_kwargs: dict,
    edit: WordSwapStart,
    *,
    taus: Sequence[float] = DIG_IN_TAUS,
    blends: Sequence[float] = DIG_IN_BLENDS,
    config: EndToEndConfig,
) -> tuple[WordSwapStart, list[tuple[float, float]], torch.Tensor]:
    """Each sample's best (tau, blend) by the non-augmented loss of the edited regeneration: the chosen edit, the
    chosen (tau, blend) per sample and every combination's losses (K, B). Blending needs a mask (``blends`` are
    reduced to 0 without one). ``optimize_kwargs`` are the solver's arguments (prompt, start latent, ...)."""
    from featscope.solvers.endtoend import optimize

    steps = config.num_steps
    blends = blends if edit.held is not None else [0.0]
    pairs = list(product(taus, blends))
    combos = [(round(tau * steps), round(blend * steps)) for tau, blend in pairs]
    plain = config.with_overrides(iterations=0)
    batch = len(edit.until)
    losses = []
    for until, blend_until in combos:
        trial = replace(edit, until=[until] * batch, blend_until=[blend_until] * batch)
        result = optimize(backbone, objective, config=plain, step_edit=trial, quiet=True, **optimize_kwargs)
        losses.append(result.losses[0])
    losses = torch.stack(losses)
    picks = torch.where(torch.isfinite(losses), losses, torch.inf).argmin(0).tolist()
    return edit.choose(combos, picks), [pairs[k] for k in picks], losses
