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
items; items are shared among torchrun ranks and a re-run skips the items already done.

A method's options are one settings dataclass (:mod:`featscope.investigate.settings`: ``DifferenceSettings``,
``NeuronSettings``, ``NeuronImagesSettings``, ``CounterfactualSettings``, ``WordSwapSettings``,
``InvertSettings``), given as ``settings=``; ``config`` takes the solver's
(:class:`~featscope.solvers.configs.EndToEndConfig`, word swap's ``WordSwapConfig``); keyword arguments override
the fields of either (``loss="log_conf"``, ``iterations=20``). ``config.yaml`` records both under ``settings``.

The methods themselves, over loaded models and tensors and a whole batch at a time, are
:mod:`featscope.investigate.cores` (``difference``, ``neuron``, ``counterfactual``, ``neuron_images_core``,
``invert``, ``null_inversion``) and :mod:`featscope.investigate.wordswap` (``word_swap_core``); the orchestration
is :mod:`featscope.orchestration`. Names are imported lazily: the settings need no torch.
"""

from featscope._lazy import exported_names, lazy_getattr

_EXPORTS = {  # module -> the names it exports, imported on first access
    "featscope.investigate.settings": (
        "PUBLISHED_REGULARIZERS",
        "PUBLISHED_WEIGHTS",
        "CounterfactualSettings",
        "DifferenceSettings",
        "InvertSettings",
        "NeuronImagesSettings",
        "NeuronSettings",
        "WordSwapSettings",
    ),
    "featscope.investigate.cores": ("REGULARIZERS", "confidences"),
    "featscope.investigate.inputs": ("image_list", "parse_label"),
    "featscope.investigate.masks": ("load_mask", "postprocess_mask"),
    "featscope.investigate.differences": ("difference", "difference_row"),
    "featscope.investigate.neurons": ("neuron", "neuron_row"),
    "featscope.investigate.neuron_counterfactuals": ("neuron_images", "neuron_images_row"),
    "featscope.investigate.counterfactuals": ("counterfactual", "counterfactual_row"),
    "featscope.investigate.word_swaps": ("word_swap", "word_swap_row"),
    "featscope.investigate.inversions": ("invert", "invert_row"),
    "featscope.ranks": ("Ranks", "join_ranks"),
    "featscope.solvers.configs": ("WordSwapConfig",),
}

__all__ = exported_names(_EXPORTS)


__getattr__ = lazy_getattr("featscope.investigate", _EXPORTS)
