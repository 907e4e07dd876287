"""Neurons (DiG-IN), run: images that raise or lower one channel of a layer, from plain samples of a prompt; with a
dataset folder also each channel's top images there and its name from them (:mod:`featscope.investigate.naming`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from featscope.captioning import Captioner, load_captioner
from featscope.datasets import ClassFolderDataset, safe_id
from featscope.errors import FeatscopeError, suggest
from featscope.extractors.base import Extractor
from featscope.investigate import cores
from featscope.investigate.inputs import load_backbone, load_network, template
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.naming import dataset_activations, top_k
from featscope.investigate.neuron_prompts import PromptChoice, candidate_words, choose_prompt
from featscope.investigate.outputs import loss_record, run_record, save_iterates
from featscope.investigate.settings import NeuronSettings
from featscope.objectives import activation, last_linear
from featscope.orchestration import Item, Plan, summary_row
from featscope.runs import RunFolder

if TYPE_CHECKING:  # the solver and backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone
    from featscope.solvers.configs import EndToEndConfig


@investigation(NeuronSettings, defaults="neuron")
def neuron(call: Call, net: str | Extractor, layer: str | None = None, channels: Sequence[int] = (0,)) -> Build:
    """Images that raise (or lower) one channel of ``layer`` (None = the input of the last linear layer,
    DiG-IN's neurons), from plain samples of ``prompt`` (None: DiG-IN's, ``prompt_template`` with the candidate
    word of ``prompt_words`` whose plain samples raise the channel most, :mod:`~featscope.investigate.neuron_prompts`;
    ``""``: no prompt). Item ``neuron<c>_s<k>``, seed ``seed + k``.

    ``settings`` is a :class:`NeuronSettings` (``prompt``, ``maximise``, ``samples``, ``images_folder``, ``top_k``,
    ``namer``); ``config`` defaults to the backbone family's for neurons. With ``images_folder`` (a dataset
    folder), each item folder also gets ``top_k.png`` / ``top_k.json``: the dataset images with the highest
    activations of that channel, and ``metrics.json`` a ``name``: the most frequent class of those images, or with
    ``namer="vlm:FOLDER"`` (an image-to-text model such as BLIP, saved with ``save_pretrained``) the most frequent
    content word of their captions (kept in ``top_k.json``)."""
    options = call.options
    channels = [int(c) for c in channels]
    folder = options.images_folder
    dataset = ClassFolderDataset(folder) if folder is not None else None

    def build(torch_device: torch.device) -> Plan:
        network = load_network(net, torch_device)
        size = tuple(network.input_size or (224, 224))
        name = check_channels(network, layer, channels, size)
        model = load_backbone(call.backbone, torch_device)
        if options.prompt is None and model.has_prompts and not options.prompt_words:  # checked before any work
            candidate_words(network, layer, channels[0], maximise=options.maximise)
        used = replace(options, prompt_template=template(options.prompt_template, model))
        captioner = load_captioner(options.namer[4:], torch_device) if options.namer is not None else None
        run = _Neuron(model, network, layer, name, channels, size, used, call.solver, dataset, captioner, call.quiet)
        items = [
            Item(safe_id(f"neuron{c}_s{k}"), {"channel": c, "sample": k, "seed": call.seed + k})
            for c in channels
            for k in range(options.samples)
        ]
        record = run_record(model, torch_device, used, call.solver, net=network.name, layer=name,
                            channels=channels, seed=call.seed)  # fmt: skip
        return Plan("neuron", items, run.work, record, neuron_row)

    return build


def check_channels(net: Extractor, layer: str | None, channels: Sequence[int], size) -> str:
    """The layer's name (None: the input of the last linear layer); an unknown layer or a channel it does not
    have is an error."""
    module = net.network
    name = last_linear(module) if layer is None else layer
    known = [n for n, _ in module.named_modules() if n]
    if name not in known:
        hint = f" (see: featscope layers {net.name})"
        raise FeatscopeError(f"{net.name} has no layer {name!r}{suggest(name, known)}{hint}")
    device = next(net.parameters()).device
    with torch.no_grad():
        act = activation(module, net.preprocess(torch.zeros(1, 3, *size, device=device)), name, layer is None)
    count = act.shape[1] if act.dim() in (2, 4) else act.shape[-1]
    bad = [c for c in channels if not 0 <= c < count]
    if bad:
        raise FeatscopeError(f"channel {bad[0]} is out of range: {name!r} of {net.name} has {count} channels")
    return name


@dataclass
class _Neuron:
    """A neuron run's models and settings: the work of one item (the dataset's activations computed once)."""

    model: Backbone
    network: Extractor
    layer: str | None
    name: str
    channels: list[int]
    size: tuple[int, int]
    options: NeuronSettings
    solver: EndToEndConfig
    dataset: ClassFolderDataset | None
    captioner: Captioner | None
    quiet: bool
    activations: torch.Tensor | None = field(default=None, repr=False)
    choices: dict[int, PromptChoice] = field(default_factory=dict, repr=False)

    def work(self, run: RunFolder, item: Item) -> dict:
        c, o = item.payload["channel"], self.options
        prompt, choice = self.prompt(c)
        result = cores.neuron(self.model, self.network, c, layer=self.layer, maximise=o.maximise,
                              seeds=[item.payload["seed"]], prompt=prompt, config=self.solver,
                              quiet=self.quiet)  # fmt: skip
        acts, tops = result.activation[0], result.top_class[0] if result.top_class else None
        captions = [
            [f"activation {a:.3g}"] + ([f"{tops[i][0]}: {tops[i][1]:.2f}"] if tops else []) for i, a in enumerate(acts)
        ]
        best = save_iterates(run, result, captions, result.objective)
        metrics = {
            "layer": self.name,
            "channel": c,
            "maximise": o.maximise,
            "prompt": prompt,
            **({"prompt_choice": choice.to_dict()} if choice is not None else {}),
            "seed": item.payload["seed"],
            "best_iteration": best,
            "activation": {"before": acts[0], "after": acts[best], "per_iteration": acts},
            **loss_record(result),
        }
        if tops:
            metrics["top_class"] = {"before": list(tops[0]), "after": list(tops[best])}
        if self.dataset is not None:
            metrics.update(self._top_k(run, c))
        return metrics

    def prompt(self, channel: int) -> tuple[str, PromptChoice | None]:
        """The channel's prompt: the one given (none without prompts), else DiG-IN's choice among the candidate
        words (once a channel)."""
        o = self.options
        if o.prompt is not None or not self.model.has_prompts:
            return o.prompt or "", None
        if channel not in self.choices:
            words = o.prompt_words or candidate_words(self.network, self.layer, channel, maximise=o.maximise)
            self.choices[channel] = choose_prompt(self.model, self.network, channel, words=words,
                                                  template=o.prompt_template, layer=self.layer, maximise=o.maximise,
                                                  probes=o.prompt_probes, config=self.solver)  # fmt: skip
        return self.choices[channel].prompt, self.choices[channel]

    def _top_k(self, run: RunFolder, channel: int) -> dict:
        if self.activations is None:
            self.activations = dataset_activations(self.network, self.name, self.layer is None, self.channels,
                                                   self.dataset, self.size)  # fmt: skip
        column = self.activations[:, self.channels.index(channel)]
        return top_k(run, self.dataset, column, self.options.top_k, self.size, self.captioner, self.options.namer)


neuron_row = summary_row(
    "channel = channel; activation before = activation.before; activation after = activation.after; "
    "best iteration = best_iteration"
)
