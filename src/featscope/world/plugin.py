"""The embedded world as a featscope plugin (see ``featscope.registry``): the ``world:ddpm`` and
``world:latent`` backbones, the world networks as extractors (``world:shape-net`` ...,
``world.classifier_tasks``), the word-level text encoder of ``pixel:`` folders, and the oracle as a reader of
decoded world images. Registering imports no model code: the loaders in ``featscope.world.loaders`` are
imported when a world spec is first loaded.

``world:ddpm``'s end-to-end defaults (``featscope investigate``; ``world:latent`` runs the published ones, as
``sd:`` does) are DiG-IN's published settings with 10x its learning rates: at the published ones the robust
world classifiers barely move in 20 iterations.
Its neurons run 40 iterations (twice the published 20): at 20, 12 of 16 tuning channels reached 3x their
mean activation on held-out images, at 40, 14 of 16.
Its counterfactuals keep the background outside the start class word's cross-attention mask (Otsu's
threshold): without a mask the regularisers hold the object too. Chosen on the tuning split
(``benchmarks/scripts/investigate_defaults_search.py``, ``investigate_counterfactual_rows.py``; records in
``benchmarks/records/investigate-world/``). An inversion's reconstruction counts as poor above a pixel L2 of
0.087, the cut that separated, on 12 tuning images inverted with two prompts each, the reconstructions in which
the oracle reads a changed attribute (``benchmarks/scripts/reconstruction_prompts.py``)."""

from featscope.registry import register_backbone, register_extractor, register_reader, register_text_encoder
from featscope.world import BACKBONES, CLASSIFIER_TASKS

ENDTOEND_DEFAULTS = {"latent_lr": 1e-2, "cond_lr": 1e-1, "uncond_lr": 1e-1}
NEURON_DEFAULTS = {"iterations": 40}
COUNTERFACTUAL_DEFAULTS = {"mask": "cross-attention:otsu", "mask_postprocess": ()}
INVERSION_DEFAULTS = {"max_reconstruction_l2": 0.087}

register_backbone(
    "world",
    "featscope.world.loaders:load_world",
    "world:ddpm or world:latent (the embedded world models)",
    BACKBONES,
    settings={
        "endtoend": ENDTOEND_DEFAULTS,
        "endtoend:neuron": NEURON_DEFAULTS,
        "counterfactual": COUNTERFACTUAL_DEFAULTS,
        "inversion": INVERSION_DEFAULTS,
    },
    settings_for=("ddpm",),  # world:latent runs the published settings, as sd: does
)
register_extractor(
    "world", "featscope.world.loaders:build", "world:shape-net or another world network", CLASSIFIER_TASKS
)
register_text_encoder("featscope.world.loaders:load_text_encoder")
register_reader("world-oracle", "featscope.world.readout:read_pairs")
