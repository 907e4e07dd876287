"""The investigation methods as in-memory cores: loaded models and tensors in, a result dataclass out.

Each core runs a whole batch (one sample per seed) and returns every iterate, the best one, the loss curves
and the method's per-sample numbers; no paths, ranks, printing or files (``quiet`` only silences the
solver's progress bar). The end-to-end solver keeps samples independent (one generator each), so a sample's
result does not depend on the batch it runs in: the CLI runs batches of one, the bench batches of eight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featscope.devices import generators_for
from featscope.errors import FeatscopeError, suggest
from featscope.extractors.base import Extractor
from featscope.investigate.common import distances, fit_image
from featscope.investigate.settings import (
    DIG_IN_BLENDS,
    DIG_IN_NEURON_BLEND,
    DIG_IN_NEURON_TAU,
    DIG_IN_TAUS,
    PUBLISHED_REGULARIZERS,
    PUBLISHED_WEIGHTS,
)
from featscope.objectives import (
    Objective,
    activation,
    class_index,
    class_loss,
    classifier_difference,
    last_linear,
    latent_background_l2,
    latent_foreground_l2,
    pick_channel,
    pixel_l1,
    pixel_l2,
    px_background_l2,
    px_foreground_l2,
    run_network,
)
from featscope.objectives import neuron as neuron_objective
from featscope.solvers.configs import InnerSteps

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a core runs
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig
    from featscope.solvers.endtoend import EndToEndResult

INNER_STEPS = InnerSteps.inner_steps  # the published inner loop of null-text inversion
RECONSTRUCTION, WORD_SWAP = "reconstruction", "word-swap"  # where a counterfactual's optimisation starts

Label = int | str

REGULARIZERS = {
    "latent_background_l2": latent_background_l2,
    "px_background_l2": px_background_l2,
    "latent_foreground_l2": latent_foreground_l2,
    "px_foreground_l2": px_foreground_l2,
    "pixel_l1": pixel_l1,
    "pixel_l2": pixel_l2,
}


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Optimized:
    """What every optimising core returns: the solver's run over the batch (iterates, losses, best)."""

    solver: EndToEndResult

    @property
    def images(self) -> torch.Tensor:
        """(I + 1, B, 3, H, W): iteration 0 is the plain sample (or the inversion's regeneration)."""
        return self.solver.images

    @property
    def best(self) -> torch.Tensor:
        """(B, 3, H, W) the iterate with the lowest (non-augmented) loss, per sample."""
        return self.solver.best

    @property
    def final(self) -> torch.Tensor:
        """(B, 3, H, W) the last iterate."""
        return self.solver.images[-1]

    def best_iteration(self, b: int) -> int:
        return int(self.solver.best_iteration[b])

    def loss_curves(self, b: int) -> dict[str, list[float]]:
        """Sample b's non-augmented loss per iteration: ``total`` and each term of a composed objective."""
        result = self.solver
        curves = {"total": result.losses[:, b].tolist()}
        if len(result.terms) > 1 or next(iter(result.terms), "total") != "total":
            curves.update({name: values[:, b].tolist() for name, values in result.terms.items()})
        return curves

    def augmented_losses(self, b: int) -> list[float]:
        return self.solver.augmented_losses[:, b].tolist()


@dataclass
class DifferenceResult(Optimized):
    """Per sample b and iterate i: ``confidence1[b][i]`` of net1's class, ``confidence2[b][i]`` of net2's."""

    objective: str
    confidence1: list[list[float]]
    confidence2: list[list[float]]


@dataclass
class NeuronResult(Optimized):
    """Per sample b and iterate i: the channel's ``activation[b][i]`` and the network's ``top_class[b][i]``
    (name, probability; None for a network without class names); ``layer`` is the resolved layer name."""

    objective: str
    layer: str
    activation: list[list[float]]
    top_class: list[list[tuple[str, float]]] | None


@dataclass
class CounterfactualResult(Optimized):
    """Per sample b: confidences of the start and target class, ``[image, iterate 0, ..., iterate I]``, and
    the L1 / L2 pixel distance of each iterate to the image (``distance[b]["l1"][i]``); the inversion's
    reconstruction (B, 3, H, W), which is iterate 0 unless the run started from a word swap, and then each
    sample's chosen ``(tau, blend)`` (``word_swap_start``)."""

    objective: str
    start_confidence: list[list[float]]
    target_confidence: list[list[float]]
    distance: list[dict[str, list[float]]]
    reconstruction: torch.Tensor
    word_swap_start: list[tuple[float, float]] | None = None


@dataclass
class NeuronImagesResult(Optimized):
    """Per image b: the channel's activation on the image (``image_activation[b]``) and on every iterate
    (``activation[b][i]``, iterate 0 = the inversion's regeneration), and the L1 / L2 pixel distance of every
    iterate to the image (``distance[b]["l2"][i]``); ``layer`` is the resolved layer name."""

    objective: str
    layer: str
    image_activation: list[float]
    activation: list[list[float]]
    distance: list[dict[str, list[float]]]


@dataclass
class InversionResult:
    """Null-text inversion of a batch: x_T (B, C, h, w), the per-step null texts (S, B, L, D), the
    reconstruction with them and plain DDIM's (B, 3, H, W), and the errors to the image, per sample."""

    x_t: torch.Tensor
    null_texts: torch.Tensor
    reconstruction: torch.Tensor
    ddim_reconstruction: torch.Tensor
    latent_mse: list[float]
    ddim_latent_mse: list[float]
    distance: list[dict[str, float]]
    ddim_distance: list[dict[str, float]]


# -- helpers ---------------------------------------------------------------------------------------
def _label_name(net: Extractor, label: Label) -> str:
    labels = getattr(net, "labels", None)
    return str(labels[label]) if isinstance(label, int) and labels and 0 <= label < len(labels) else str(label)


@torch.no_grad()
def confidences(net: Extractor, images: torch.Tensor, index: int) -> list[float]:
    """Softmax probability of class ``index`` for each image (N, 3, H, W), without augmentation."""
    device = next(net.parameters()).device
    return run_network(net, images.to(device)).float().softmax(1)[:, index].cpu().tolist()


def _top_class(net: Extractor, images: torch.Tensor) -> list[tuple[str, float]]:
    device = next(net.parameters()).device
    with torch.no_grad():
        probs = run_network(net, images.to(device)).float().softmax(1).cpu()
    conf, idx = probs.max(1)
    return [(_label_name(net, int(i)), float(c)) for i, c in zip(idx, conf, strict=True)]


def _generators(backbone: Backbone, seeds: Sequence[int]) -> list[torch.Generator]:
    return generators_for(list(seeds), backbone.device)


def _prompts(prompts: str | Sequence[str], n: int) -> str | list[str]:
    if isinstance(prompts, str):
        return prompts
    if len(prompts) != n:
        raise FeatscopeError(f"{len(prompts)} prompts for {n} samples; give one prompt or one per sample")
    return list(prompts)


def regularized(objective: Objective, regularizers: Sequence[str], weights: Sequence[float]) -> Objective:
    """``objective + sum(weight * regularizer)`` over the named regularizers (:data:`REGULARIZERS`)."""
    if len(regularizers) != len(weights):
        raise FeatscopeError(f"{len(regularizers)} regularizers but {len(weights)} weights; give one weight each")
    for name, weight in zip(regularizers, weights, strict=True):
        if name not in REGULARIZERS:
            raise FeatscopeError(
                f"unknown regularizer {name!r}{suggest(name, REGULARIZERS)}; known: {', '.join(REGULARIZERS)}"
            )
        objective = objective + float(weight) * REGULARIZERS[name]()
    return objective


# -- cores -----------------------------------------------------------------------------------------
def difference(
    backbone: Backbone,
    net1: Extractor,
    net2: Extractor,
    label: Label,
    *,
    seeds: Sequence[int],
    prompt: str | Sequence[str],
    loss: str = "conf",
    config: EndToEndConfig,
    quiet: bool = True,
) -> DifferenceResult:
    """Images ``net1`` sees as class ``label`` and ``net2`` does not (DiG-IN §3), one per seed."""
    from featscope.solvers.endtoend import optimize

    objective = classifier_difference(net1, net2, label, loss)
    y1, y2 = class_index(net1, label), class_index(net2, label)
    result = optimize(backbone, objective, prompt=_prompts(prompt, len(seeds)), generators=_generators(backbone, seeds),
                      config=config, quiet=quiet)  # fmt: skip
    per_sample = [result.images[:, b] for b in range(len(seeds))]
    return DifferenceResult(
        result,
        objective.name,
        [confidences(net1, images, y1) for images in per_sample],
        [confidences(net2, images, y2) for images in per_sample],
    )


def neuron(
    backbone: Backbone,
    net: Extractor,
    channel: int,
    *,
    layer: str | None = None,
    maximise: bool = True,
    seeds: Sequence[int],
    prompt: str | Sequence[str] = "",
    config: EndToEndConfig,
    quiet: bool = True,
) -> NeuronResult:
    """Images that raise (or lower) ``channel`` of ``layer`` (None: the input of the last linear layer), one
    per seed, with the channel's activation and the network's top class of every iterate."""
    from featscope.solvers.endtoend import optimize

    objective = neuron_objective(net, layer, channel, maximise)
    name = last_linear(net.network) if layer is None else layer
    size = tuple(net.input_size or (224, 224))
    device = next(net.parameters()).device
    result = optimize(backbone, objective, prompt=_prompts(prompt, len(seeds)),
                      generators=_generators(backbone, seeds), config=config, quiet=quiet)  # fmt: skip
    activations, tops = [], []
    for b in range(len(seeds)):
        images = fit_image(result.images[:, b], size)
        with torch.no_grad():
            act = activation(net.network, net.preprocess(images.to(device)), name, layer is None).float()
        activations.append(pick_channel(act, channel).cpu().tolist())
        tops.append(_top_class(net, images) if getattr(net, "labels", None) else None)
    return NeuronResult(result, objective.name, name, activations, tops if tops and tops[0] is not None else None)


def null_inversion(
    backbone: Backbone, images: torch.Tensor, prompts: str | Sequence[str], *, num_steps: int,
    guidance_scale: float, inner_steps: int = INNER_STEPS, quiet: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Null-text inversion of each image (one at a time inside): x_T (B, C, h, w), null texts (S, B, L, D)."""
    from featscope.inversion import null_text_invert

    return null_text_invert(backbone, images, _prompts(prompts, len(images)), num_steps=num_steps,
                            guidance_scale=guidance_scale, inner_steps=inner_steps, quiet=quiet)  # fmt: skip


def _inversion(backbone: Backbone, images: torch.Tensor, text: str | list[str],
               inverted: tuple[torch.Tensor, torch.Tensor] | None, inner_steps: int, config: EndToEndConfig,
               quiet: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``inverted`` (x_T, null texts), else the images' null-text inversion on the solver's chain."""
    if inverted is not None:
        return inverted
    return null_inversion(backbone, images, text, num_steps=config.num_steps, guidance_scale=config.guidance_scale,
                          inner_steps=inner_steps, quiet=quiet)  # fmt: skip


def _inversion_start(backbone: Backbone, images: torch.Tensor, text: str | list[str],
                     inverted: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                     seeds: Sequence[int]) -> dict:  # fmt: skip
    """The solver's arguments that start it from the images' inversion, with ``mask`` as the foreground (None:
    everything is background)."""
    x_t, null_texts = inverted
    mask = mask if mask is not None else torch.zeros(1, 1, *images.shape[-2:])
    return dict(prompt=text, start_latent=x_t, null_texts=null_texts, start_image=images, mask=mask,
                generators=_generators(backbone, seeds))  # fmt: skip


def _from_inversion(
    backbone: Backbone, objective: Objective, images: torch.Tensor, prompts: str | Sequence[str],
    inverted: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None, seeds: Sequence[int],
    inner_steps: int, config: EndToEndConfig, quiet: bool,
):  # fmt: skip
    """End-to-end optimisation of ``objective`` from the images' null-text inversion (computed unless
    ``inverted``), with ``mask`` as the foreground (None: everything is background)."""
    from featscope.solvers.endtoend import optimize

    text = _prompts(prompts, len(images))
    inverted = _inversion(backbone, images, text, inverted, inner_steps, config, quiet)
    return optimize(backbone, objective, config=config, quiet=quiet,
                    **_inversion_start(backbone, images, text, inverted, mask, seeds))  # fmt: skip


def counterfactual(
    backbone: Backbone,
    net: Extractor,
    images: torch.Tensor,
    start: Label,
    target: Label,
    *,
    seeds: Sequence[int],
    prompts: str | Sequence[str],
    regularizers: Sequence[str] = PUBLISHED_REGULARIZERS,
    regularizer_weights: Sequence[float] = PUBLISHED_WEIGHTS,
    mask: torch.Tensor | None = None,
    loss: str = "ce",
    inverted: tuple[torch.Tensor, torch.Tensor] | None = None,
    inner_steps: int = INNER_STEPS,
    start_from: str = WORD_SWAP,
    start_taus: Sequence[float] = DIG_IN_TAUS,
    start_blends: Sequence[float] = DIG_IN_BLENDS,
    config: EndToEndConfig,
    quiet: bool = True,
) -> CounterfactualResult:
    """Visual counterfactuals (DiG-IN §5) of real images (B, 3, H, W) at the backbone's size: optimise
    ``class_loss(target) + sum(weight * regularizer)`` from their null-text inversion (``inverted`` = (x_T,
    null texts) when already computed), ``mask`` (B or 1, 1, H, W) being the foreground (None: all background).
    ``start_from``: ``"word-swap"`` (DiG-IN's: the best word swap of the start class word for the target's over
    ``start_taus`` x ``start_blends``, see :mod:`featscope.investigate.word_swap_start`; each caption must name the
    start class) or ``"reconstruction"`` (the inversion's regeneration)."""
    if start_from not in (WORD_SWAP, RECONSTRUCTION):  # before the inversion's work
        raise FeatscopeError(f"start_from {start_from!r}: use {RECONSTRUCTION} or {WORD_SWAP}")
    objective = regularized(class_loss(net, target, loss), regularizers, regularizer_weights)
    text = _prompts(prompts, len(images))
    inverted = _inversion(backbone, images, text, inverted, inner_steps, config, quiet)
    chosen = None
    if start_from == WORD_SWAP:
        words = (_label_name(net, start), _label_name(net, target))
        result, chosen, reconstruction = _from_word_swap(backbone, objective, images, text, words, inverted, mask,
                                                         seeds, (start_taus, start_blends), config, quiet)  # fmt: skip
    else:
        result = _from_inversion(backbone, objective, images, text, inverted, mask, seeds, inner_steps, config, quiet)
        reconstruction = result.images[0]
    y_start, y_target = class_index(net, start), class_index(net, target)
    start_conf, target_conf, dist = [], [], []
    for b in range(len(images)):
        everything = torch.cat([images[b : b + 1], result.images[:, b]])
        start_conf.append(confidences(net, everything, y_start))
        target_conf.append(confidences(net, everything, y_target))
        dist.append(distances(result.images[:, b], images[b : b + 1]))
    return CounterfactualResult(result, objective.name, start_conf, target_conf, dist, reconstruction, chosen)


def _from_word_swap(backbone: Backbone, objective: Objective, images: torch.Tensor, text: str | list[str],
                    words: tuple[str, str], inverted: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                    seeds: Sequence[int], search: tuple[Sequence[float], Sequence[float]], config: EndToEndConfig,
                    quiet: bool):  # fmt: skip
    """The optimisation from each image's best word swap: (its result, the chosen (tau, blend) per image, the
    source caption's regeneration)."""
    from featscope.investigate.word_edits import swap_word, token_mapper
    from featscope.investigate.word_swap_start import WordSwapStart, best_word_swap, latent_region, record_source
    from featscope.solvers.endtoend import optimize

    text = [text] * len(images) if isinstance(text, str) else text
    edited = [swap_word(p, *words) for p in text]
    x_t, null_texts = inverted
    taus, blends = search
    source = record_source(backbone, x_t, null_texts, text, guidance_scale=config.guidance_scale,
                           steps=round(max(taus) * config.num_steps))  # fmt: skip
    mappers = torch.stack([token_mapper(backbone, s, e, *words) for s, e in zip(text, edited, strict=True)])
    batch = len(images)
    edit = WordSwapStart(source, mappers, [0] * batch, [0] * batch, latent_region(backbone, mask, batch))
    kwargs = _inversion_start(backbone, images, edited, inverted, mask, seeds)
    edit, chosen, _ = best_word_swap(backbone, objective, kwargs, edit, taus=taus, blends=blends, config=config)
    result = optimize(backbone, objective, config=config, step_edit=edit, quiet=quiet, **kwargs)
    with torch.no_grad():
        reconstruction = backbone.decode(source.latents[-1]).float().clamp(0, 1).cpu()
    return result, chosen, reconstruction


@torch.no_grad()
def channel_activation(net: Extractor, images: torch.Tensor, layer: str | None, channel: int) -> list[float]:
    """The activation of ``channel`` of ``layer`` (None: the input of the last linear layer) per image."""
    name = last_linear(net.network) if layer is None else layer
    device = next(net.parameters()).device
    fitted = fit_image(images, tuple(net.input_size or (224, 224))).to(device)
    act = activation(net.network, net.preprocess(fitted), name, layer is None).float()
    return pick_channel(act, channel).cpu().tolist()


def neuron_images_core(
    backbone: Backbone,
    net: Extractor,
    images: torch.Tensor,
    channel: int,
    *,
    layer: str | None = None,
    maximise: bool = True,
    seeds: Sequence[int],
    prompts: str | Sequence[str],
    regularizers: Sequence[str] = PUBLISHED_REGULARIZERS,
    regularizer_weights: Sequence[float] = PUBLISHED_WEIGHTS,
    mask: torch.Tensor | None = None,
    inverted: tuple[torch.Tensor, torch.Tensor] | None = None,
    inner_steps: int = INNER_STEPS,
    reinject: bool = False,
    start_tau: float = DIG_IN_NEURON_TAU,
    start_blend: float = DIG_IN_NEURON_BLEND,
    config: EndToEndConfig,
    quiet: bool = True,
) -> NeuronImagesResult:
    """Neuron counterfactuals of real images (B, 3, H, W) at the backbone's size: raise (``maximise``) or lower
    ``channel`` of ``layer``, starting from their null-text inversion (``inverted`` = (x_T, null texts) when
    already computed), with the regularisers outside ``mask`` (B or 1, 1, H, W; None: everything is background).
    ``reinject`` (DiG-IN's start): every iteration re-injects the caption's own cross-attention of the inversion's
    regeneration for the first ``start_tau`` of the steps and blends that regeneration's states into the
    foreground ``mask`` for the first ``start_blend``, so the object keeps its layout while the channel changes it
    (no blending without a mask); else every iteration runs the plain chain."""
    objective = regularized(neuron_objective(net, layer, channel, maximise), regularizers, regularizer_weights)
    if reinject:
        text = _prompts(prompts, len(images))
        inverted = _inversion(backbone, images, text, inverted, inner_steps, config, quiet)
        result = _reinjected(backbone, objective, images, text, inverted, mask, seeds, (start_tau, start_blend),
                             config, quiet)  # fmt: skip
    else:
        result = _from_inversion(backbone, objective, images, prompts, inverted, mask, seeds, inner_steps, config,
                                 quiet)  # fmt: skip
    name = last_linear(net.network) if layer is None else layer
    per_image = [channel_activation(net, result.images[:, b], layer, channel) for b in range(len(images))]
    dist = [distances(result.images[:, b], images[b : b + 1]) for b in range(len(images))]
    return NeuronImagesResult(result, objective.name, name, channel_activation(net, images, layer, channel),
                              per_image, dist)  # fmt: skip


def _reinjected(backbone: Backbone, objective: Objective, images: torch.Tensor, text: str | list[str],
                inverted: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None, seeds: Sequence[int],
                shares: tuple[float, float], config: EndToEndConfig, quiet: bool):  # fmt: skip
    """The optimisation with the caption's own cross-attention re-injected and the foreground blended for the
    first ``shares`` = (tau, blend) of the steps (DiG-IN's neuron counterfactuals of images)."""
    from featscope.investigate.word_edits import identity_mapper
    from featscope.investigate.word_swap_start import WordSwapStart, latent_region, record_source
    from featscope.solvers.endtoend import optimize

    text = [text] * len(images) if isinstance(text, str) else text
    x_t, null_texts = inverted
    until, blend_until = (round(share * config.num_steps) for share in shares)
    source = record_source(backbone, x_t, null_texts, text, guidance_scale=config.guidance_scale, steps=until)
    mappers = torch.stack([identity_mapper(backbone, caption) for caption in text])
    batch = len(images)
    edit = WordSwapStart(source, mappers, [until] * batch, [blend_until] * batch,
                         latent_region(backbone, mask, batch, foreground=True))  # fmt: skip
    return optimize(backbone, objective, config=config, step_edit=edit, quiet=quiet,
                    **_inversion_start(backbone, images, text, inverted, mask, seeds))  # fmt: skip


@torch.no_grad()
def _reconstruct(backbone: Backbone, x_t, prompts, null_texts, guidance_scale: float, num_steps: int):
    from featscope.inversion import regenerate

    z = regenerate(backbone, x_t, prompts, null_texts, guidance_scale=guidance_scale)
    plain = regenerate(backbone, x_t, prompts, guidance_scale=guidance_scale, num_steps=num_steps)
    return z, plain, backbone.decode(z).float().clamp(0, 1).cpu(), backbone.decode(plain).float().clamp(0, 1).cpu()


def invert(
    backbone: Backbone,
    images: torch.Tensor,
    prompts: str | Sequence[str],
    *,
    num_steps: int = 20,
    guidance_scale: float = 3.0,
    inner_steps: int = INNER_STEPS,
    quiet: bool = True,
) -> InversionResult:
    """Null-text inversion (DiG-IN §4) of real images (B, 3, H, W) at the backbone's size, with the
    reconstruction error of its regeneration and of plain DDIM inversion's, per sample."""
    text = _prompts(prompts, len(images))
    x_t, null_texts = null_inversion(backbone, images, text, num_steps=num_steps, guidance_scale=guidance_scale,
                                     inner_steps=inner_steps, quiet=quiet)  # fmt: skip
    with torch.no_grad():
        target = backbone.encode(images.to(backbone.device)).float()
    z, plain, recon, plain_image = _reconstruct(backbone, x_t, text, null_texts, guidance_scale, num_steps)
    one = [(z[b : b + 1], plain[b : b + 1], target[b : b + 1]) for b in range(len(images))]
    d = [distances(recon[b : b + 1], images[b : b + 1]) for b in range(len(images))]
    dp = [distances(plain_image[b : b + 1], images[b : b + 1]) for b in range(len(images))]
    return InversionResult(
        x_t,
        null_texts,
        recon,
        plain_image,
        [float((zb - tb).pow(2).mean()) for zb, _, tb in one],
        [float((pb - tb).pow(2).mean()) for _, pb, tb in one],
        [{"l1": e["l1"][0], "l2": e["l2"][0]} for e in d],
        [{"l1": e["l1"][0], "l2": e["l2"][0]} for e in dp],
    )
