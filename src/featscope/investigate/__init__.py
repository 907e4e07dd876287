"""Investigations of a network with the end-to-end solver (DiG-IN), run item by item into resumable folders.

::

    from featscope import investigate
    investigate.difference("world:shape-net@fc", "world:spurious-net@fc", ["square"], out="runs/diff")
    investigate.counterfactual("world:shape-net@fc", "cat.png", "square", "circle", out="runs/cf")
    investigate.invert(["cat.png"], prompt="red square on dark", out="runs/inv")

Each writes ``out/<item>/`` (start.png, sample.png, result.png, strip.png, loss.png, metrics.json,
config.yaml) and ``out/summary.json`` + ``out/summary.md``; items are sharded over torchrun ranks and a
re-run skips the items already done.
"""

from featscope.investigate.common import Ranks, join_ranks
from featscope.investigate.methods import (
    PUBLISHED_REGULARIZERS,
    PUBLISHED_WEIGHTS,
    REGULARIZERS,
    confidences,
    counterfactual,
    difference,
    image_list,
    invert,
    load_mask,
    neuron,
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
    "difference",
    "image_list",
    "invert",
    "join_ranks",
    "load_mask",
    "neuron",
    "parse_label",
    "postprocess_mask",
]
