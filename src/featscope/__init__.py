"""featscope: see what a vision network's feature space encodes, by generating images with diffusion models.

Public API (imported lazily, so that ``featscope --help`` starts fast)::

    import featscope
    result = featscope.decode("target.png")                       # embedded world defaults
    result = featscope.decode("cat.jpg", backbone="sd:CompVis/stable-diffusion-v1-4",
                              extractor="torchvision:resnet50", config="reference")
    featscope.decode("cat.jpg", config="refine", guidance_weight=0.3)   # a preset name or a UniversalConfig

Two layers (docs/architecture.md): cores over loaded models and tensors return result dataclasses and
write nothing (``decode_features`` -> ``DecodeOutput``, ``solve_universal(backbone, objective, config,
generators=...)``, ``optimize``, ``featscope.investigate.cores``, ``featscope.featinv.reconstruct``/``steer``/
``evaluate``); orchestration loads specs and writes run folders (``decode``, ``featscope.investigate``,
``featscope.study``). Every solver takes an objective from ``featscope.objectives``.
"""

from featscope._lazy import exported_names, lazy_getattr
from featscope._version import __version__

_EXPORTS = {  # module -> the names it exports, imported on first access
    "featscope.decode_run": ("decode", "DecodeResult"),
    "featscope.decoding": ("decode_features", "DecodeOutput"),
    "featscope.solvers.universal": ("solve_universal",),
    "featscope.errors": ("FeatscopeError",),
    "featscope.backbones": ("load_backbone",),
    "featscope.extractors": ("load_extractor", "list_layers"),
    "featscope.solvers.configs": ("PRESETS", "UniversalConfig", "preset", "EndToEndConfig"),
    "featscope.targets": ("build_targets", "save_feature"),
    "featscope.bench": ("run_bench",),
    "featscope.solvers.endtoend": ("optimize",),
    "featscope.inversion": ("null_text_invert",),
    "featscope.objectives": ("objectives",),
}

__all__ = ["__version__", *exported_names(_EXPORTS)]


__getattr__ = lazy_getattr("featscope", _EXPORTS)
