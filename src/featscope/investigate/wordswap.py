"""Word-swap counterfactuals (prompt-to-prompt on an inverted real image; DiG-IN's baseline for counterfactuals).

A real image is null-text inverted with its caption; then the source caption and the edited caption (the class
word replaced by the target class word) are regenerated together from the same x_T with the same null texts.
For the first ``tau * T`` of the T DDIM steps the edited caption's cross-attention probabilities are replaced by
the source caption's (:class:`~featscope.investigate.attention.CrossAttentionReplace`), which keeps the layout of
the image; after them the edited word acts freely. The search over tau (one regeneration, every tau of the grid
in one batch) keeps, per image, among the results the classifier gives the target class with probability above
``flip``, the one nearest the image (L2 in pixels), else the one with the highest target probability.

:func:`word_swap_core` is the core (loaded models and tensors in, :class:`WordSwapResult` out);
:func:`featscope.investigate.word_swap` (:mod:`featscope.investigate.word_swaps`) runs it over image files into
one run folder per image and target class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featscope.extractors.base import Extractor
from featscope.investigate import cores
from featscope.investigate.attention import CrossAttentionReplace, on_cross_attention
from featscope.investigate.common import distances
from featscope.investigate.word_edits import swap_word, token_mapper
from featscope.objectives import class_index
from featscope.solvers.configs import WordSwapConfig

if TYPE_CHECKING:  # backbones import diffusers (seconds): only when a core runs
    from featscope.backbones.base import Backbone


@dataclass
class WordSwapResult:
    """Per image b: the edited caption, the source caption's regeneration (the reconstruction), the result of
    every tau (``images[k, b]``), the classifier's start / target probabilities of the image and every result
    (``start_confidence[b] = [image, tau_0, ...]``), the pixel distances of every result to the image and the
    chosen tau's index."""

    taus: list[float]
    prompts: list[str]
    edited_prompts: list[str]
    reconstruction: torch.Tensor  # (B, 3, H, W)
    images: torch.Tensor  # (K, B, 3, H, W)
    start_confidence: list[list[float]]
    target_confidence: list[list[float]]
    distance: list[dict[str, list[float]]]
    chosen: list[int]
    flipped: list[bool]

    @property
    def best(self) -> torch.Tensor:
        """(B, 3, H, W): each image's chosen result."""
        return torch.stack([self.images[k, b] for b, k in enumerate(self.chosen)])

    @property
    def chosen_tau(self) -> list[float]:
        return [self.taus[k] for k in self.chosen]


# -- the core --------------------------------------------------------------------------------------
@torch.no_grad()
def prompt_to_prompt(
    backbone: Backbone,
    x_t: torch.Tensor,
    null_texts: torch.Tensor,
    source: str,
    edited: str,
    taus: Sequence[float],
    *,
    mapper: torch.Tensor,
    guidance_scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regenerate one inverted image (x_T (1, C, h, w), null texts (T, 1, L, D)) with ``source`` and, for each
    tau, with ``edited`` re-injecting the source's cross-attention for the first round(tau * T) steps, all in one
    batch. Returns the decoded source regeneration (1, 3, H, W) and the edited ones (K, 3, H, W), in [0, 1]."""
    from featscope.inversion import ddim_move, ddim_schedule, guided_eps, null_embeddings

    num_steps = len(null_texts)
    streams = 1 + len(taus)
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    cond = backbone.encode_prompt([source] + [edited] * len(taus)).float()
    uncond = null_embeddings(backbone, streams, num_steps, null_texts)
    z = x_t.to(backbone.device, torch.float32).expand(streams, *x_t.shape[1:]).clone()
    processor = CrossAttentionReplace(streams, [round(tau * num_steps) for tau in taus], mapper)
    with on_cross_attention(backbone.unet, processor):
        for i, t in enumerate(schedule.timesteps):
            processor.step = i
            eps = guided_eps(backbone, z, t, cond, uncond[i], guidance_scale)
            z, _ = ddim_move(z, eps, schedule.abar[i], schedule.abar_prev[i])
    images = backbone.decode(z).float().clamp(0, 1).cpu()
    return images[:1], images[1:]


def word_swap_core(
    backbone: Backbone,
    net: Extractor,
    images: torch.Tensor,
    start: cores.Label,
    target: cores.Label,
    *,
    prompts: str | Sequence[str],
    word: str | None = None,
    new_word: str | None = None,
    inverted: tuple[torch.Tensor, torch.Tensor] | None = None,
    config: WordSwapConfig | None = None,
    quiet: bool = True,
) -> WordSwapResult:
    """Word-swap counterfactuals of real images (B, 3, H, W) at the backbone's size: ``word`` (default: the
    start class name) is replaced by ``new_word`` (default: the target class name) in each caption, and the
    tau search keeps each image's nearest flipped result (see the module). ``inverted`` = (x_T, null texts)
    when the null-text inversion is already computed."""
    config = config or WordSwapConfig()
    config.validate()
    word = word or cores._label_name(net, start)
    new_word = new_word or cores._label_name(net, target)
    text = cores._prompts(prompts, len(images))
    text = [text] * len(images) if isinstance(text, str) else text
    edited = [swap_word(p, word, new_word) for p in text]
    if inverted is None:
        inverted = cores.null_inversion(backbone, images, text, num_steps=config.num_steps,
                                        guidance_scale=config.guidance_scale, inner_steps=config.inner_steps,
                                        quiet=quiet)  # fmt: skip
    x_t, null_texts = inverted
    y_start, y_target = class_index(net, start), class_index(net, target)
    recon, results, start_conf, target_conf, dist, chosen = [], [], [], [], [], []
    for b in range(len(images)):
        mapper = token_mapper(backbone, text[b], edited[b], word, new_word)
        source, swapped = prompt_to_prompt(
            backbone, x_t[b : b + 1], null_texts[:, b : b + 1], text[b], edited[b], config.taus, mapper=mapper,
            guidance_scale=config.guidance_scale,
        )  # fmt: skip
        everything = torch.cat([images[b : b + 1].cpu(), swapped])
        start_conf.append(cores.confidences(net, everything, y_start))
        target_conf.append(cores.confidences(net, everything, y_target))
        dist.append(distances(swapped, images[b : b + 1].cpu()))
        chosen.append(_choose(target_conf[-1][1:], dist[-1]["l2"], config.flip))
        recon.append(source)
        results.append(swapped)
    flipped = [target_conf[b][1 + k] > config.flip for b, k in enumerate(chosen)]
    return WordSwapResult(list(config.taus), text, edited, torch.cat(recon), torch.stack(results, 1), start_conf,
                          target_conf, dist, chosen, flipped)  # fmt: skip


def _choose(target_confidence: list[float], l2: list[float], flip: float) -> int:
    """The index of the nearest result above ``flip``, else of the highest target confidence."""
    flipped = [k for k, c in enumerate(target_confidence) if c > flip]
    if flipped:
        return min(flipped, key=lambda k: l2[k])
    return max(range(len(target_confidence)), key=lambda k: target_confidence[k])
