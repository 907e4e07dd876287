"""Neuron counterfactuals of real images (DiG-IN), run: raise or lower one channel starting from an image's inversion.

Each image is null-text inverted with its caption; the end-to-end solver then optimises
``-+activation(channel) + sum(weight * regularizer)`` from the inverted x_T and null texts, the background
regularisers (DiG-IN's published ``latent_background_l2`` and ``px_background_l2``) keeping the image outside
the mask (no mask: the whole image counts as background), optionally with DiG-IN's re-injection start. The core is
:func:`featscope.investigate.cores.neuron_images_core`; :func:`neuron_images` runs it over image files
(``featscope investigate neuron --images ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from featscope.datasets import ImageItem, safe_id
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.images import save_image
from featscope.investigate import cores
from featscope.investigate.captions import Captions, ImageRun
from featscope.investigate.common import load_start_image
from featscope.investigate.cores import regularized
from featscope.investigate.fidelity import checks, summarise
from featscope.investigate.inputs import (
    image_list,
    load_backbone,
    load_network,
    needs_inversion_guidance,
    needs_prompts,
)
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.masks import ItemMasks, default_masking, word_tokens
from featscope.investigate.neurons import check_channels
from featscope.investigate.outputs import loss_record, run_record, save_iterates
from featscope.investigate.settings import NO_MASK, NeuronImagesSettings
from featscope.objectives import neuron as neuron_objective
from featscope.orchestration import Item, Plan, summary_row, unique_ids
from featscope.runs import RunFolder


@investigation(NeuronImagesSettings)
def neuron_images(
    call: Call, net: str | Extractor, images, layer: str | None = None, channels: Sequence[int] = (0,)
) -> Build:
    """Neuron counterfactuals of real images: item ``<image id>_neuron<c>`` per image and channel, seed ``seed + i``.

    ``images`` as in :func:`featscope.investigate.counterfactual`; ``settings`` is a :class:`NeuronImagesSettings`.
    The caption is ``prompt`` > ``IMAGE.txt`` > ``caption_model`` > ``prompt_template`` with a dataset's class
    name (loose files: the empty caption). ``mask``: a PNG of the foreground (white), or one made from each
    inverted image (``"cross-attention[:T|:otsu]"``, ``"sam:FOLDER"``, from the cross-attention of ``object_word``,
    by default the image's class name), outside which the regularisers keep the image (None or ``"none"``: no
    mask). ``reinject``: DiG-IN's start (the caption's own cross-attention re-injected for ``start_tau`` of the
    steps, the object held inside the mask for ``start_blend``; see
    :func:`~featscope.investigate.cores.neuron_images_core`). An item folder has the investigation layout
    (target.png, initial.png = the inversion's regeneration, best.png, final.png, strip.png, loss.png, sheet.png,
    metrics.json with the channel's activation on the image, before and after)."""
    needs_inversion_guidance(call.solver.guidance_scale, "neuron counterfactuals")
    o = call.options
    channels = [int(c) for c in channels]
    entries = image_list(images)

    def build(torch_device: torch.device) -> Plan:
        network = load_network(net, torch_device)
        name = check_channels(network, layer, channels, tuple(network.input_size or (224, 224)))
        regularized(neuron_objective(network, layer, channels[0], o.maximise), o.regularizers, o.regularizer_weights)
        model = load_backbone(call.backbone, torch_device)
        needs_prompts(model, "neuron counterfactuals of images need")
        captions = Captions.load(o, model, torch_device)
        mask, steps = default_masking(o.mask or NO_MASK, o.mask_postprocess, model)  # no mask unless one is given
        masks = ItemMasks.load(mask, [e.path for e in entries], tuple(model.image_size), steps, torch_device)
        if masks.spec is not None:  # a generated mask needs the object's word in every caption, checked first
            for entry in entries:
                word_tokens(model, captions.of_entry(entry), _object_word(o, entry))
        ids = unique_ids([e.item_id for e in entries])
        items = [Item(safe_id(f"{item_id}_neuron{c}"), {"entry": e, "channel": c}) for e, item_id in
                 zip(entries, ids, strict=True) for c in channels]  # fmt: skip
        seeds = {item.item_id: call.seed + i for i, item in enumerate(items)}
        resolved = replace(o, mask=mask, mask_postprocess=steps)
        run = _NeuronImages(model, network, resolved, call.solver, captions, call.quiet, layer, name, masks, seeds)
        record = run_record(model, torch_device, captions.used(resolved), call.solver, net=network.name, layer=name,
                            channels=channels, seed=call.seed)  # fmt: skip
        return Plan("neuron-images", items, run.work, record, neuron_images_row, summarise)

    return build


def _object_word(options: NeuronImagesSettings, entry: ImageItem) -> str:
    """The caption's word for the image's object: ``object_word``, else the image's class name."""
    word = options.object_word or entry.class_name
    if not word:
        raise FeatscopeError(
            f"{entry.path.name} has no class folder, and a generated mask needs the caption's word for its object; "
            "give --object-word WORD (e.g. circle), or a PNG mask"
        )
    return word


@dataclass
class _NeuronImages(ImageRun):
    """A neuron-images run: its layer (and resolved name), masks and seeds; the work of one item."""

    layer: str | None
    name: str
    masks: ItemMasks
    seeds: dict[str, int]

    def work(self, run: RunFolder, item: Item) -> dict:
        entry: ImageItem = item.payload["entry"]
        c, o, seed = item.payload["channel"], self.options, self.seeds[item.item_id]
        text = self.captions.of_entry(entry)
        image = load_start_image(entry.path, tuple(self.model.image_size))
        save_image(image[0], run.file("target.png"))
        inverted = cores.null_inversion(self.model, image, text, num_steps=self.solver.num_steps,
                                        guidance_scale=self.solver.guidance_scale, inner_steps=o.inner_steps,
                                        quiet=self.quiet)  # fmt: skip
        word = _object_word(o, entry) if self.masks.spec is not None else None
        mask = self.masks.of(run, self.model, image, inverted, text, word, self.solver.guidance_scale)
        result = cores.neuron_images_core(
            self.model, self.network, image, c, layer=self.layer, maximise=o.maximise, seeds=[seed], prompts=text,
            regularizers=o.regularizers, regularizer_weights=o.regularizer_weights, mask=mask, inverted=inverted,
            reinject=o.reinject, start_tau=o.start_tau, start_blend=o.start_blend, config=self.solver,
            quiet=self.quiet,
        )  # fmt: skip
        captions = [[f"activation {a:.3g}", f"loss {float(v):.4g}"] for a, v in
                    zip(result.activation[0], result.solver.losses[:, 0], strict=True)]  # fmt: skip
        best = save_iterates(run, result, captions, result.objective)
        record = {"image": str(entry.path), "prompt": text, "layer": self.name, "channel": c, "maximise": o.maximise,
                  "seed": seed, "mask": o.mask, "reinject": o.reinject}  # fmt: skip
        metrics = _item_metrics(result, best)
        moved = metrics["activation"]["after"] - metrics["activation"]["image"]
        rose = moved > 0 if o.maximise else moved < 0
        return {**record, **metrics, **checks(image, result.images[0], result.best, self.model.spec, flipped=rose,
                                              intended=None, target=None, item_id=item.item_id, say=True,
                                              missed="activation did not move")}  # fmt: skip


def _item_metrics(result: cores.NeuronImagesResult, best: int) -> dict:
    """An item's numbers: its best iteration, the channel's activation (on the image, before, after) and the
    distance to the image, with the loss record."""
    acts, d = result.activation[0], result.distance[0]
    return {
        "best_iteration": best,
        "activation": {"image": result.image_activation[0], "before": acts[0], "after": acts[best],
                       "per_iteration": acts},
        "distance_to_image": {"l1_before": d["l1"][0], "l2_before": d["l2"][0], "l1_after": d["l1"][best],
                              "l2_after": d["l2"][best], "per_iteration": d},
        **loss_record(result),
    }  # fmt: skip


neuron_images_row = summary_row(
    "channel = channel; activation image = activation.image; activation before = activation.before; "
    "activation after = activation.after; L2 after = distance_to_image.l2_after; best iteration = best_iteration; "
    "reconstruction L2 = reconstruction.l2; verdict = verdict"
)
