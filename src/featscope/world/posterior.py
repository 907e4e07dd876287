"""The Bayes denoiser of the world's training pool: E[x0 | x_t, caption] over a finite set of images."""

from __future__ import annotations

import torch

from featscope.world.render import ATTRIBUTES, WorldRecord


class PoolPosterior:
    """The posterior mean of x0 given a noisy x_t and the caption's words, over the training pool.

    The pool is the training distribution, so this is the exact minimiser of the denoising loss on it:
    regressing onto it instead of each sample's own x0 keeps the optimum and removes most of the
    target's variance at high noise, where x_t says little about x0 (Stable Target Field, Xu et al.
    2023, with the whole pool as the reference batch). At low noise the weights collapse onto the
    sample's own x0, so training computes it only from ``featscope.world.train.POSTERIOR_FROM`` up.
    """

    def __init__(self, pool: torch.Tensor, records: list[WorldRecord]) -> None:
        self.flat = pool.flatten(1)
        self.sq_norm = self.flat.pow(2).sum(1)
        self.masks = {
            (name, value): torch.tensor([getattr(r, name) == value for r in records])
            for name, values in ATTRIBUTES.items()
            for value in values
        }

    def caption_mask(self, kept: dict[str, str]) -> torch.Tensor:
        """Which pool images agree with every word of a caption."""
        mask = torch.ones(len(self.flat), dtype=torch.bool)
        for name, value in kept.items():
            mask &= self.masks[(name, value)]
        return mask

    def x0(self, x_t: torch.Tensor, abar: torch.Tensor, kept: list[dict[str, str]]) -> torch.Tensor:
        """E[x0 | x_t, caption] for each row of ``x_t`` (noised with cumulative alphas ``abar``)."""
        a = abar.view(-1, 1)
        logits = (a.sqrt() * (x_t.flatten(1) @ self.flat.T) - 0.5 * a * self.sq_norm) / (1 - a)
        allowed = torch.stack([self.caption_mask(k) for k in kept])
        weights = logits.masked_fill(~allowed, float("-inf")).softmax(1)
        return (weights @ self.flat).view_as(x_t)
