"""Visual counterfactuals of real images (DiG-IN §5), run: each image inverted with its caption, then optimised
toward a target class while the background regularisers keep it outside its foreground mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from featscope.datasets import ImageItem
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.images import save_image
from featscope.investigate import cores
from featscope.investigate.captions import Captions, ImageRun
from featscope.investigate.common import FLIP, load_start_image
from featscope.investigate.cores import _label_name, regularized
from featscope.investigate.fidelity import checks, intended_attribute, summarise
from featscope.investigate.inputs import (
    class_items,
    image_list,
    load_backbone,
    load_network,
    needs_inversion_guidance,
    target_list,
)
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.masks import ItemMasks, default_masking, word_tokens
from featscope.investigate.outputs import loss_record, run_record, save_iterates
from featscope.investigate.settings import CounterfactualSettings
from featscope.investigate.word_edits import has_word
from featscope.objectives import class_loss
from featscope.orchestration import Item, Plan, summary_row
from featscope.runs import RunFolder

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig


@investigation(CounterfactualSettings)
def counterfactual(
    call: Call, net: str | Extractor, images, start_label: int | str | None = None,
    target_label: int | str | Sequence[int | str] = (),
) -> Build:  # fmt: skip
    """Visual counterfactuals of real images (DiG-IN §5): null-text inversion of each image with its caption,
    then end-to-end optimisation of ``class_loss(target) + sum(weight * regularizer)`` from the inverted x_T
    and null texts. Item ``<image id>_to_<target>``, one per image and target class, seed ``seed + i``.

    ``images``: image files, a dataset folder (the start label defaults to the image's class name) or a
    :class:`~featscope.datasets.ClassFolderDataset` (which selects classes and images of a folder). ``settings``
    is a :class:`CounterfactualSettings`. The caption is ``prompt``, else ``IMAGE.txt``, else the
    ``caption_model``'s (:func:`featscope.captioning.load_captioner`), else ``prompt_template`` with the start
    class. ``mask``, the foreground of the background regularisers: a PNG (white = foreground; the image's or the
    backbone's size), or ``"cross-attention"`` (``:THRESHOLD`` / ``:otsu``; the start class word's
    cross-attention in the caption while the inverted image is regenerated) or ``"sam:FOLDER"`` (SAM / SAM-HQ
    prompted from that map), see :mod:`featscope.investigate.masks`; post-processed by ``mask_postprocess``
    (``erosion_3``, ``dilation_20``, ``blur_45_30``, or ``published``: those scaled to the image). ``"none"``: the
    whole image counts as background. None: the backbone family's default mask and post-processing
    (:func:`~featscope.investigate.masks.default_masking`: DiG-IN's cross-attention mask, on the world Otsu's
    threshold); config.yaml records the mask used."""
    needs_inversion_guidance(call.solver.guidance_scale, "counterfactuals")
    targets = target_list(target_label)
    entries = image_list(images)

    def build(torch_device: torch.device) -> Plan:
        network = load_network(net, torch_device)
        model = load_backbone(call.backbone, torch_device)
        mask, steps = default_masking(call.options.mask, call.options.mask_postprocess, model)
        options = replace(call.options, mask=mask, mask_postprocess=steps)
        run = _Counterfactual.load(model, network, options, call.solver, entries, torch_device, call.quiet)
        items = run.items(entries, start_label, targets)
        for target in targets:  # the loss and the regularizers, checked before any work
            regularized(class_loss(network, target, options.loss), options.regularizers, options.regularizer_weights)
        run.seeds = {item.item_id: call.seed + i for i, item in enumerate(items)}
        record = run_record(model, torch_device, run.captions.used(options), call.solver, net=network.name,
                            start_label=start_label, target_labels=targets, seed=call.seed)  # fmt: skip
        return Plan("counterfactual", items, run.work, record, counterfactual_row, summarise)

    return build


@dataclass
class _Counterfactual(ImageRun):
    """A counterfactual run: its mask (generated or the user's) and seeds; its items and the work of one."""

    masks: ItemMasks
    seeds: dict[str, int] | None = None

    @classmethod
    def load(cls, model: Backbone, network: Extractor, options: CounterfactualSettings, solver: EndToEndConfig,
             entries: list[ImageItem], device: torch.device, quiet: bool) -> _Counterfactual:  # fmt: skip
        """The run's SAM model, user mask and captioning model loaded (on ``device``)."""
        masks = ItemMasks.load(options.mask, [e.path for e in entries], tuple(model.image_size),
                               options.mask_postprocess, device)  # fmt: skip
        return cls(model, network, options, solver, Captions.load(options, model, device), quiet, masks)

    def items(self, entries: list[ImageItem], start_label, targets: list) -> list[Item]:
        """One item per image and target class (:func:`class_items`); a generated mask and the word-swap start
        need the start class word in each caption, checked first too."""
        needs_word = self.masks.spec is not None or self.options.start_from == cores.WORD_SWAP
        return class_items(self.network, entries, start_label, targets, self._word_check if needs_word else None)

    def _word_check(self, entry: ImageItem, start) -> None:
        start_name = _label_name(self.network, start)
        caption = self.captions.of(entry, start_name)
        if self.options.start_from == cores.WORD_SWAP and not has_word(caption, start_name):
            raise FeatscopeError(
                f"the start class word {start_name!r} is not in the caption {caption!r}, and the word-swap start "
                "replaces it; give --prompt with it, or --start-from reconstruction"
            )
        if self.masks.spec is not None:
            word_tokens(self.model, caption, start_name)

    def work(self, run: RunFolder, item: Item) -> dict:
        p, o, size = item.payload, self.options, tuple(self.model.image_size)
        entry: ImageItem = p["entry"]
        start_name, target_name = _label_name(self.network, p["start"]), _label_name(self.network, p["target"])
        prompt = self.captions.of(entry, start_name)
        image = load_start_image(entry.path, size)
        save_image(image[0], run.file("target.png"))
        inverted = cores.null_inversion(self.model, image, prompt, num_steps=self.solver.num_steps,
                                        guidance_scale=self.solver.guidance_scale, inner_steps=o.inner_steps,
                                        quiet=self.quiet)  # fmt: skip
        mask = self.masks.of(run, self.model, image, inverted, prompt, start_name, self.solver.guidance_scale)
        result = cores.counterfactual(
            self.model, self.network, image, p["start"], p["target"], seeds=[self.seeds[item.item_id]],
            prompts=prompt, regularizers=o.regularizers, regularizer_weights=o.regularizer_weights, mask=mask,
            loss=o.loss, inverted=inverted, start_from=o.start_from, start_taus=o.start_taus,
            start_blends=o.start_blends, config=self.solver, quiet=self.quiet,
        )  # fmt: skip
        metrics = _metrics(run, result, entry, start_name, target_name, prompt, o.mask)
        flipped = metrics["confidence"]["target_class"]["after"] > FLIP
        return {**metrics, **checks(image, result.reconstruction, result.best, self.model.spec, flipped=flipped,
                                    intended=intended_attribute(target_name), target=target_name,
                                    item_id=item.item_id, say=True)}  # fmt: skip


def _metrics(run: RunFolder, result: cores.CounterfactualResult, entry: ImageItem, start_name: str,
             target_name: str, prompt: str, mask: str | None) -> dict:  # fmt: skip
    """The iterates and figures of a counterfactual item; returns its metrics."""
    cs, ct, d = result.start_confidence[0], result.target_confidence[0], result.distance[0]
    captions = [
        [f"{start_name}: {a:.3f}", f"{target_name}: {b:.3f}", f"loss {float(v):.4g}"]
        for a, b, v in zip(cs[1:], ct[1:], result.solver.losses[:, 0], strict=True)
    ]
    best = save_iterates(run, result, captions, result.objective)
    return {
        "image": str(entry.path),
        "start_class": start_name,
        "target_class": target_name,
        "prompt": prompt,
        "mask": mask,
        **(
            {"word_swap_start": dict(zip(("tau", "blend"), result.word_swap_start[0], strict=True))}
            if result.word_swap_start
            else {}
        ),  # fmt: skip
        "best_iteration": best,
        "confidence": {
            "start_class": {"image": cs[0], "before": cs[1], "after": cs[1 + best], "per_iteration": cs[1:]},
            "target_class": {"image": ct[0], "before": ct[1], "after": ct[1 + best], "per_iteration": ct[1:]},
        },
        "distance_to_image": {
            "l1_before": d["l1"][0],
            "l2_before": d["l2"][0],
            "l1_after": d["l1"][best],
            "l2_after": d["l2"][best],
            "per_iteration": d,
        },
        **loss_record(result),
    }


counterfactual_row = summary_row(
    "target = target_class; start conf before = confidence.start_class.before; "
    "start conf after = confidence.start_class.after; target conf before = confidence.target_class.before; "
    "target conf after = confidence.target_class.after; L2 after = distance_to_image.l2_after; "
    "best iteration = best_iteration; reconstruction L2 = reconstruction.l2; verdict = verdict"
)
