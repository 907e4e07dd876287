"""Classifier differences (DiG-IN §3), run: images that one network sees as a class and another does not.

Like every investigation here, :func:`difference` builds its items and a work function that calls the method's
core (:mod:`featscope.investigate.cores`) on one item and writes the item's folder; the orchestration
(:mod:`featscope.orchestration`) writes the folders atomically, skips items whose ``metrics.json`` exists
(resume), shards items over torchrun ranks (item i on rank i % world size) and ends with ``out/summary.json``
and ``out/summary.md`` (rank 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from featscope.datasets import safe_id
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.investigate import cores
from featscope.investigate.cores import _label_name
from featscope.investigate.inputs import load_backbone, load_network, template
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.outputs import loss_record, run_record, save_iterates
from featscope.investigate.settings import DifferenceSettings
from featscope.objectives import class_index, classifier_difference
from featscope.orchestration import Item, Plan, summary_row
from featscope.runs import RunFolder

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig


@investigation(DifferenceSettings)
def difference(call: Call, net1: str | Extractor, net2: str | Extractor,
               classes: Sequence[int | str] | None = None) -> Build:  # fmt: skip
    """Images that ``net1`` recognises as each class and ``net2`` does not (DiG-IN §3, loss ``conf`` as published).

    Item ``<index>_<class>_s<k>`` is sample k of a class (every class of net1 when ``classes`` is None): prompt
    ``prompt_template`` with the class name, x_T from seed ``seed + 1000 * index + k``. ``settings`` is a
    :class:`DifferenceSettings` (``prompt_template``, ``samples_per_class``, ``loss``)."""

    def build(torch_device: torch.device) -> Plan:
        first, second = load_network(net1, torch_device), load_network(net2, torch_device)
        model = load_backbone(call.backbone, torch_device)
        used = replace(call.options, prompt_template=template(call.options.prompt_template, model))
        run = _Difference(model, first, second, used, call.solver, call.quiet)
        record = run_record(model, torch_device, used, call.solver, net1=first.name, net2=second.name, seed=call.seed)
        return Plan("difference", run.items(classes, call.seed), run.work, record, difference_row)

    return build


@dataclass
class _Difference:
    """A difference run's models and settings: its items and the work of one."""

    model: Backbone
    first: Extractor
    second: Extractor
    options: DifferenceSettings
    solver: EndToEndConfig
    quiet: bool

    def items(self, classes: Sequence[int | str] | None, seed: int) -> list[Item]:
        """``samples_per_class`` items per class (all of net1's when ``classes`` is None); checks the loss first."""
        labels = list(classes) if classes else list(range(len(getattr(self.first, "labels", None) or [])))
        if not labels:
            raise FeatscopeError(f"{self.first.name} has no class names; name the classes to compare")
        items = []
        for label in labels:
            y1, y2 = class_index(self.first, label), class_index(self.second, label)
            name = _label_name(self.first, label)
            classifier_difference(self.first, self.second, label, self.options.loss)  # the loss kind, before any work
            for k in range(self.options.samples_per_class):
                payload = {"label": label, "name": name, "y1": y1, "y2": y2, "sample": k, "seed": seed + 1000 * y1 + k}
                items.append(Item(safe_id(f"{y1:03d}_{name}_s{k}"), payload))
        return items

    def work(self, run: RunFolder, item: Item) -> dict:
        p = item.payload
        prompt = self.options.prompt_template.format(label=p["name"])
        result = cores.difference(self.model, self.first, self.second, p["label"], seeds=[p["seed"]], prompt=prompt,
                                  loss=self.options.loss, config=self.solver, quiet=self.quiet)  # fmt: skip
        c1, c2 = result.confidence1[0], result.confidence2[0]
        captions = [
            [f"net1 {p['name']}: {a:.3f}", f"net2 {p['name']}: {b:.3f}", f"loss {float(v):.4g}"]
            for a, b, v in zip(c1, c2, result.solver.losses[:, 0], strict=True)
        ]
        best = save_iterates(run, result, captions, result.objective)
        return {
            "class": p["name"],
            "class_index": {"net1": p["y1"], "net2": p["y2"]},
            "prompt": prompt,
            "seed": p["seed"],
            "best_iteration": best,
            "confidence": {
                "net1": {"network": self.first.name, "before": c1[0], "after": c1[best], "per_iteration": c1},
                "net2": {"network": self.second.name, "before": c2[0], "after": c2[best], "per_iteration": c2},
            },
            **loss_record(result),
        }


difference_row = summary_row(
    "class = class; net1 before = confidence.net1.before; net1 after = confidence.net1.after; "
    "net2 before = confidence.net2.before; net2 after = confidence.net2.after; best iteration = best_iteration"
)
