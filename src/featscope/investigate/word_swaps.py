"""Word-swap counterfactuals of real images, run: one folder per image and target class, each the core
(:func:`featscope.investigate.wordswap.word_swap_core`) on one image with its caption."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featscope.extractors.base import Extractor
from featscope.images import save_image
from featscope.investigate.captions import Captions, ImageRun
from featscope.investigate.common import load_start_image
from featscope.investigate.cores import _label_name
from featscope.investigate.fidelity import checks, intended_attribute, summarise
from featscope.investigate.inputs import (
    class_items,
    image_list,
    load_backbone,
    load_network,
    needs_prompts,
    target_list,
)
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.outputs import run_record
from featscope.investigate.settings import WordSwapSettings
from featscope.investigate.wordswap import WordSwapResult, swap_word, token_mapper, word_swap_core
from featscope.orchestration import Item, Plan, summary_row
from featscope.solvers.configs import WordSwapConfig

if TYPE_CHECKING:  # backbones import diffusers (seconds): only when a run starts
    from featscope.runs import RunFolder


@investigation(WordSwapSettings, solver=WordSwapConfig, seeded=False)
def word_swap(
    call: Call, net: str | Extractor, images, start_label: int | str | None = None,
    target_label: int | str | Sequence[int | str] = (),
) -> Build:  # fmt: skip
    """Word-swap counterfactuals of real images, one item ``<image id>_to_<target>`` per image and target class.

    ``images``, ``start_label`` and the caption (``prompt`` > ``IMAGE.txt`` > ``caption_model`` > template) as in
    :func:`featscope.investigate.counterfactual`; ``word`` / ``new_word`` default to the start / target class
    names. ``settings`` is a :class:`WordSwapSettings`, ``config`` a :class:`WordSwapConfig` (e.g. ``taus=(0, 0.5,
    1)`` as a keyword). An item folder: ``target.png``, ``initial.png`` (the caption's regeneration),
    ``best.png`` and ``final.png`` (the chosen result), ``sheet.png`` (every tau), ``config.yaml``,
    ``log.jsonl`` (one line per tau) and ``metrics.json``."""
    targets = target_list(target_label)
    entries = image_list(images)

    def build(torch_device: torch.device) -> Plan:
        network = load_network(net, torch_device)
        model = load_backbone(call.backbone, torch_device)
        needs_prompts(model, "word swap needs")
        captions = Captions.load(call.options, model, torch_device)
        run = _WordSwap(model, network, call.options, call.solver, captions, call.quiet)
        items = class_items(network, entries, start_label, targets)
        for item in items:  # every caption and edit is checked before any work
            run.prepare(item.payload)
        record = run_record(model, torch_device, captions.used(call.options), call.solver, net=network.name,
                            start_label=start_label, target_labels=targets)  # fmt: skip
        return Plan("word-swap", items, run.work, record, word_swap_row, summarise)

    return build


@dataclass
class _WordSwap(ImageRun):
    """A word-swap run: each item's words and caption, and the work of one."""

    def prepare(self, p: dict) -> None:
        """The item's words and caption into its payload ``p``; a word missing from the caption or unknown to the
        backbone's text encoder fails here."""
        p["start_word"] = self.options.word or _label_name(self.network, p["start"])
        p["new_word"] = self.options.new_word or _label_name(self.network, p["target"])
        p["prompt"] = self.captions.of(p["entry"], p["start_word"])
        edited = swap_word(p["prompt"], p["start_word"], p["new_word"])
        self.model.encode_prompt([edited])  # a word the backbone's text encoder does not know fails here
        token_mapper(self.model, p["prompt"], edited, p["start_word"], p["new_word"])

    def work(self, run: RunFolder, item: Item) -> dict:
        p = item.payload
        image = load_start_image(p["entry"].path, tuple(self.model.image_size))
        save_image(image[0], run.file("target.png"))
        result = word_swap_core(
            self.model, self.network, image, p["start"], p["target"], prompts=p["prompt"], word=p["start_word"],
            new_word=p["new_word"], config=self.solver, quiet=self.quiet,
        )  # fmt: skip
        metrics = _files(run, result, image, p, self.network)
        return {**metrics, **checks(image, result.reconstruction, result.best, self.model.spec,
                                    flipped=result.flipped[0], intended=intended_attribute(p["new_word"]),
                                    target=p["new_word"], item_id=item.item_id, say=True)}  # fmt: skip


def _files(run: RunFolder, result: WordSwapResult, image: torch.Tensor, p: dict, network: Extractor) -> dict:
    """initial.png, best.png, final.png, sheet.png and log.jsonl of one item; returns its metrics."""
    from featscope.sheet import save_sheet

    start_name, target_name = _label_name(network, p["start"]), _label_name(network, p["target"])
    k, cs, ct, d = result.chosen[0], result.start_confidence[0], result.target_confidence[0], result.distance[0]
    for i, tau in enumerate(result.taus):
        run.log({"tau": tau, "start_confidence": cs[1 + i], "target_confidence": ct[1 + i], "l1": d["l1"][i],
                 "l2": d["l2"][i]})  # fmt: skip
    save_image(result.reconstruction[0], run.file("initial.png"))
    save_image(result.best[0], run.file("best.png"))
    save_image(result.best[0], run.file("final.png"))
    columns = ["target", "reconstruction"] + [f"tau {tau:g}" + (" *" if i == k else "") for i, tau in
                                              enumerate(result.taus)]  # fmt: skip
    note = (f"'{result.edited_prompts[0]}', chosen tau {result.taus[k]:g}: {target_name} {ct[1 + k]:.3f} "
            f"({'flipped' if result.flipped[0] else 'not flipped'}), L2 {d['l2'][k]:.4f}")  # fmt: skip
    save_sheet(run.file("sheet.png"), columns, [[image[0], result.reconstruction[0], *result.images[:, 0]]],
               notes=[note])  # fmt: skip
    return {
        "image": str(p["entry"].path),
        "start_class": start_name,
        "target_class": target_name,
        "prompt": result.prompts[0],
        "edited_prompt": result.edited_prompts[0],
        "taus": result.taus,
        "chosen_tau": result.taus[k],
        "flipped": result.flipped[0],
        "confidence": {
            "start_class": {"image": cs[0], "after": cs[1 + k], "per_tau": cs[1:]},
            "target_class": {"image": ct[0], "after": ct[1 + k], "per_tau": ct[1:]},
        },
        "distance_to_image": {"l1_after": d["l1"][k], "l2_after": d["l2"][k], "per_tau": d},
    }


word_swap_row = summary_row(
    "target = target_class; chosen tau = chosen_tau; flipped = flipped; "
    "start conf after = confidence.start_class.after; target conf after = confidence.target_class.after; "
    "L2 after = distance_to_image.l2_after; reconstruction L2 = reconstruction.l2; verdict = verdict"
)
