"""Investigations of a network with the end-to-end solver (DiG-IN), run item by item into resumable folders.

::

    from featscope import investigate
    investigate.difference("world:shape-net@fc", "world:spurious-net@fc", ["square"], out="runs/diff")
    investigate.counterfactual("world:shape-net@fc", "cat.png", "square", "circle", out="runs/cf")
    investigate.invert(["cat.png"], prompt="red square on dark", out="runs/inv")

Each writes ``out/<item>/`` (target.png for a real image, initial.png, best.png, final.png, strip.png,
loss.png, metrics.json, config.yaml, log.jsonl) and ``out/summary.json`` + ``out/summary.md``; items are
sharded over torchrun ranks and a re-run skips the items already done. The methods themselves, over loaded
models and tensors and a whole batch at a time, are :mod:`featscope.investigate.cores`.
"""

from featscope.investigate.common import Ranks, join_ranks
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

__all__ = [
    "PUBLISHED_REGULARIZERS",
    "PUBLISHED_WEIGHTS",
    "REGULARIZERS",
    "Ranks",
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
    "neuron_row",
    "parse_label",
    "postprocess_mask",
]
