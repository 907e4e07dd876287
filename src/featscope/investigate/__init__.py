"""Investigations of a network with the end-to-end solver (DiG-IN), run item by item into resumable folders.

::

    from featscope import investigate, EndToEndConfig
    investigate.difference("world:shape-net@fc", "world:spurious-net@fc", ["square"], out="runs/diff")
    investigate.neuron("world:shape-net@fc", None, [1, 5], out="runs/neurons", config=EndToEndConfig(iterations=20))
    investigate.counterfactual("world:shape-net@fc", "cat.png", "square", "circle", out="runs/cf")
    investigate.invert(["cat.png"], prompt="red square on dark", out="runs/inv")
    investigate.word_swap("world:shape-net@fc", "circle.png", "circle", "square", out="runs/swap")
    investigate.neuron_images("world:shape-net@fc", ["circle.png"], None, [3], out="runs/neuron-images")

Each writes ``out/<item>/`` in the shared run-folder layout (config.yaml, metrics.json, log.jsonl, final.png,
best.png, sheet.png, target.png for a real image) plus initial.png (iteration 0), strip.png, loss.png, and for a masked
counterfactual mask.png (attention.png when the mask is found automatically); an inversion writes target.png,
reconstruction.png, x_T.pt, null_texts.pt and prompt.txt. ``out/summary.json`` + ``out/summary.md`` cover all
items; items are shared among torchrun ranks and a re-run skips the items already done. ``config`` takes an
:class:`~featscope.solvers.endtoend.EndToEndConfig`; keyword settings override its fields. The methods
themselves, over loaded models and tensors and a whole batch at a time, are :mod:`featscope.investigate.cores`
(``difference``, ``neuron``, ``counterfactual``, ``invert``, ``null_inversion``, returning ``DifferenceResult``,
``NeuronResult``, ``CounterfactualResult``, ``InversionResult``); the orchestration is
:mod:`featscope.orchestration`.
"""

from featscope.investigate.cores import PUBLISHED_REGULARIZERS, PUBLISHED_WEIGHTS, REGULARIZERS, confidences
from featscope.investigate.methods import (
    counterfactual,
    counterfactual_row,
    difference,
    difference_row,
    image_list,
    invert,
    invert_row,
    load_mask,
    neuron,
    neuron_row,
    parse_label,
    postprocess_mask,
)
from featscope.investigate.neuron_images import neuron_images, neuron_images_row
from featscope.investigate.wordswap import word_swap, word_swap_row
from featscope.ranks import Ranks, join_ranks
from featscope.solvers.configs import WordSwapConfig

__all__ = [
    "PUBLISHED_REGULARIZERS",
    "PUBLISHED_WEIGHTS",
    "REGULARIZERS",
    "Ranks",
    "WordSwapConfig",
    "confidences",
    "counterfactual",
    "counterfactual_row",
    "difference",
    "difference_row",
    "image_list",
    "invert",
    "invert_row",
    "join_ranks",
    "load_mask",
    "neuron",
    "neuron_images",
    "neuron_images_row",
    "neuron_row",
    "parse_label",
    "postprocess_mask",
    "word_swap",
    "word_swap_row",
]
