"""Neuron counterfactuals of real images (DiG-IN): raise or lower one channel starting from an image's inversion.

Each image is null-text inverted with its caption; the end-to-end solver then optimises
``-+activation(channel) + sum(weight * regularizer)`` from the inverted x_T and null texts, the background
regularisers (DiG-IN's published ``latent_background_l2`` and ``px_background_l2``) keeping the image outside
the mask (no mask: the whole image counts as background). :func:`neuron_images_core` is the core;
:func:`neuron_images` runs it over image files (``featscope investigate neuron --images ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from featscope.datasets import safe_id
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.images import save_image
from featscope.investigate import cores
from featscope.investigate.common import (
    DEFAULT_BACKBONE,
    distances,
    fit_image,
    load_start_image,
)
from featscope.investigate.cores import PUBLISHED_REGULARIZERS, PUBLISHED_WEIGHTS, regularized
from featscope.investigate.fidelity import checks, summarise
from featscope.investigate.masks import parse_mask
from featscope.investigate.methods import (
    _backbone,
    _caption,
    _check_channels,
    _config,
    _loss_record,
    _network,
    _save_iterates,
    _settings_record,
    _template,
    _user_mask,
    image_list,
)
from featscope.objectives import activation, last_linear, pick_channel
from featscope.objectives import neuron as neuron_objective
from featscope.orchestration import Item, Plan, run_plan, summary_row, unique_ids
from featscope.ranks import Ranks
from featscope.runs import RunFolder

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a core runs
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig


@dataclass
class NeuronImagesResult(cores.Optimized):
    """Per image b: the channel's activation on the image (``image_activation[b]``) and on every iterate
    (``activation[b][i]``, iterate 0 = the inversion's regeneration), and the L1 / L2 pixel distance of every
    iterate to the image (``distance[b]["l2"][i]``); ``layer`` is the resolved layer name."""

    objective: str
    layer: str
    image_activation: list[float]
    activation: list[list[float]]
    distance: list[dict[str, list[float]]]


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
    inner_steps: int = 10,
    config: EndToEndConfig,
    quiet: bool = True,
) -> NeuronImagesResult:
    """Raise (``maximise``) or lower ``channel`` of ``layer`` in real images (B, 3, H, W) at the backbone's size,
    starting from their null-text inversion (``inverted`` = (x_T, null texts) when already computed), with the
    regularisers outside ``mask`` (B or 1, 1, H, W; None: everything is background)."""
    from featscope.solvers.endtoend import optimize

    objective = regularized(neuron_objective(net, layer, channel, maximise), regularizers, regularizer_weights)
    text = cores._prompts(prompts, len(images))
    if inverted is None:
        inverted = cores.null_inversion(backbone, images, text, num_steps=config.num_steps,
                                        guidance_scale=config.guidance_scale, inner_steps=inner_steps,
                                        quiet=quiet)  # fmt: skip
    x_t, null_texts = inverted
    mask = mask if mask is not None else torch.zeros(1, 1, *images.shape[-2:])
    result = optimize(backbone, objective, prompt=text, start_latent=x_t, null_texts=null_texts, start_image=images,
                      mask=mask, generators=cores._generators(backbone, seeds), config=config, quiet=quiet)  # fmt: skip
    name = last_linear(net.network) if layer is None else layer
    per_image = [channel_activation(net, result.images[:, b], layer, channel) for b in range(len(images))]
    dist = [distances(result.images[:, b], images[b : b + 1]) for b in range(len(images))]
    return NeuronImagesResult(result, objective.name, name, channel_activation(net, images, layer, channel),
                              per_image, dist)  # fmt: skip


def neuron_images(
    net: str | Extractor,
    images,
    layer: str | None = None,
    channels: Sequence[int] = (0,),
    *,
    out: str | Path,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    prompt: str | None = None,
    prompt_template: str | None = None,
    caption_model: str | None = None,
    maximise: bool = True,
    regularizers: Sequence[str] = PUBLISHED_REGULARIZERS,
    regularizer_weights: Sequence[float] = PUBLISHED_WEIGHTS,
    mask: str | Path | None = None,
    mask_postprocess: Sequence[str] = (),
    inner_steps: int = 10,
    class_names: str | Path | None = None,
    classes: Sequence[str] | None = None,
    images_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    quiet: bool = False,
    config: EndToEndConfig | None = None,
    ranks: Ranks | None = None,
    **settings,
) -> dict | None:
    """Neuron counterfactuals of real images: item ``<image id>_neuron<c>`` per image and channel, seed ``seed + i``.

    ``images`` as in :func:`featscope.investigate.counterfactual`; the caption is ``prompt`` > ``IMAGE.txt`` >
    ``caption_model`` > ``prompt_template`` with a dataset's class name (loose files: the empty caption). ``mask``:
    a PNG of the foreground (white), outside which the regularisers keep the image. An item folder has the
    investigation layout (target.png, initial.png = the inversion's regeneration, best.png, final.png,
    strip.png, loss.png, sheet.png, metrics.json with the channel's activation on the image, before and after).
    """
    from featscope.captioning import load_captioner

    solver = _config(config, settings, backbone)
    if solver.guidance_scale == 1.0:
        raise FeatscopeError("neuron counterfactuals start from a null-text inversion, which needs guidance_scale > 1")
    if mask is not None and parse_mask(mask) is not None:
        raise FeatscopeError(f"mask {str(mask)!r}: neuron counterfactuals take a PNG mask (white = foreground)")
    channels = [int(c) for c in channels]
    entries = image_list(images, class_names=class_names, classes=classes, images_per_class=images_per_class)

    def build(torch_device: torch.device) -> Plan:
        network = _network(net, torch_device)
        name = _check_channels(network, layer, channels, tuple(network.input_size or (224, 224)))
        regularized(neuron_objective(network, layer, channels[0], maximise), regularizers, regularizer_weights)
        model = _backbone(backbone, torch_device)
        if not model.has_prompts:
            raise FeatscopeError(
                f"neuron counterfactuals of images need a backbone with prompts; {model.spec} has none"
            )
        size = tuple(model.image_size)
        template = _template(prompt_template, model)
        captioner = load_captioner(caption_model, torch_device) if caption_model is not None else None
        user_mask = _user_mask(mask, entries, size, mask_postprocess) if mask is not None else None
        ids = unique_ids([e.item_id for e in entries])
        items = [Item(safe_id(f"{item_id}_neuron{c}"), {"entry": e, "channel": c}) for e, item_id in
                 zip(entries, ids, strict=True) for c in channels]  # fmt: skip
        seeds = {item.item_id: seed + i for i, item in enumerate(items)}

        def work(run: RunFolder, item: Item) -> dict:
            entry, c = item.payload["entry"], item.payload["channel"]
            text = _caption(entry, prompt, template if entry.class_name else "{label}", entry.class_name, captioner)
            image = load_start_image(entry.path, size)
            save_image(image[0], run.file("target.png"))
            if user_mask is not None:
                save_image(user_mask[0].expand(3, -1, -1), run.file("mask.png"))
            result = neuron_images_core(
                model, network, image, c, layer=layer, maximise=maximise, seeds=[seeds[item.item_id]], prompts=text,
                regularizers=regularizers, regularizer_weights=regularizer_weights, mask=user_mask,
                inner_steps=inner_steps, config=solver, quiet=quiet,
            )  # fmt: skip
            captions = [[f"activation {a:.3g}", f"loss {float(v):.4g}"] for a, v in
                        zip(result.activation[0], result.solver.losses[:, 0], strict=True)]  # fmt: skip
            best = _save_iterates(run, result, captions, result.objective)
            record = {"image": str(entry.path), "prompt": text, "layer": name, "channel": c, "maximise": maximise,
                      "seed": seeds[item.item_id]}  # fmt: skip
            metrics = _item_metrics(result, best)
            moved = metrics["activation"]["after"] - metrics["activation"]["image"]
            rose = moved > 0 if maximise else moved < 0
            return {**record, **metrics, **checks(image, result.images[0], result.best, model.spec, flipped=rose,
                                                  intended=None, target=None, item_id=item.item_id, say=True,
                                                  missed="activation did not move")}  # fmt: skip

        record = {"net": network.name, "layer": name, "channels": channels, "maximise": maximise, "prompt": prompt,
                  "prompt_template": template, "caption_model": caption_model, "regularizers": list(regularizers),
                  "regularizer_weights": [float(w) for w in regularizer_weights],
                  "mask": str(mask) if mask is not None else None, "mask_postprocess": list(mask_postprocess),
                  "inner_steps": inner_steps, "seed": seed,
                  **_settings_record(solver, model, torch_device)}  # fmt: skip
        return Plan("neuron-images", items, work, record, neuron_images_row, summarise)

    return run_plan(build, out=out, device=device, quiet=quiet, ranks=ranks)


def _item_metrics(result: NeuronImagesResult, best: int) -> dict:
    """An item's numbers: its best iteration, the channel's activation (on the image, before, after) and the
    distance to the image, with the loss record."""
    acts, d = result.activation[0], result.distance[0]
    return {
        "best_iteration": best,
        "activation": {"image": result.image_activation[0], "before": acts[0], "after": acts[best],
                       "per_iteration": acts},
        "distance_to_image": {"l1_before": d["l1"][0], "l2_before": d["l2"][0], "l1_after": d["l1"][best],
                              "l2_after": d["l2"][best], "per_iteration": d},
        **_loss_record(result),
    }  # fmt: skip


neuron_images_row = summary_row(
    "channel = channel; activation image = activation.image; activation before = activation.before; "
    "activation after = activation.after; L2 after = distance_to_image.l2_after; best iteration = best_iteration; "
    "reconstruction L2 = reconstruction.l2; verdict = verdict"
)


