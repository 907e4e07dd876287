"""The prompt a neuron's visualisation starts from, as DiG-IN chooses it: the prompt template (``a photograph of a
{label}``; the world's ``{label}``) with the candidate word whose plain samples raise the channel most on average
(lower it most, for a neuron lowered). The candidates are the network's class names: all of them up to
``count``, else the ``count`` classes its last linear layer weights the channel most (for the input of that layer).

A core: loaded models in, a :class:`PromptChoice` out. Each candidate's probe samples are iteration 0 of the
end-to-end solver (the plain samples the optimisation starts from), from seeds no item uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.investigate import cores
from featscope.objectives import last_linear

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a core runs
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig

PROBE_SEED = 7 * 10**6  # probe sample k of every candidate starts from seed PROBE_SEED + k: no item's seed
CANDIDATES = 5  # candidate words of a network with more classes: the channel's top classes by the last layer


@dataclass
class PromptChoice:
    """The chosen ``word`` and ``prompt``, and each candidate's mean activation over its probe samples."""

    word: str
    prompt: str
    mean_activation: dict[str, float]

    def to_dict(self) -> dict:
        return {"word": self.word, "prompt": self.prompt, "mean_activation": self.mean_activation}


def candidate_words(net: Extractor, layer: str | None, channel: int, *, maximise: bool = True,
                    count: int = CANDIDATES) -> list[str]:  # fmt: skip
    """The network's class names (all, when it has at most ``count``); else, for a channel of the last linear
    layer's input (``layer`` None), the ``count`` classes whose weight on it is highest (lowest when lowering)."""
    labels = [str(label) for label in getattr(net, "labels", None) or []]
    if not labels:
        raise FeatscopeError(f"{net.name} has no class names to choose a neuron's prompt from; give prompt_words")
    if len(labels) <= count:
        return labels
    if layer is not None:
        raise FeatscopeError(
            f"{net.name} has {len(labels)} classes; name the candidate words of a channel of {layer!r} (prompt_words)"
        )
    weight = dict(net.network.named_modules())[last_linear(net.network)].weight[:, channel].detach().float()
    return [labels[i] for i in weight.argsort(descending=maximise)[:count].tolist()]


def choose_prompt(
    backbone: Backbone,
    net: Extractor,
    channel: int,
    *,
    words: Sequence[str],
    template: str,
    layer: str | None = None,
    maximise: bool = True,
    probes: int = 4,
    config: EndToEndConfig,
) -> PromptChoice:
    """The candidate ``words``' prompts (``template`` with each) scored by the channel's mean activation over
    ``probes`` plain samples each; the best word wins (the first of equals)."""
    if not words or probes < 1:
        raise FeatscopeError("choosing a neuron's prompt needs at least one candidate word and one probe sample")
    plain = config.with_overrides(iterations=0)
    seeds = [PROBE_SEED + k for k in range(probes)]
    means = {}
    for word in words:
        result = cores.neuron(backbone, net, channel, layer=layer, maximise=maximise, seeds=seeds,
                              prompt=template.format(label=word), config=plain, quiet=True)  # fmt: skip
        means[word] = float(torch.tensor([a[0] for a in result.activation]).mean())
    best = (max if maximise else min)(means, key=means.__getitem__)
    return PromptChoice(best, template.format(label=best), means)
