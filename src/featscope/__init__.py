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

from featscope._lazy import lazy_getattr
from featscope._version import __version__

_EXPORTS = {
    "decode": "featscope.decoding",
    "DecodeResult": "featscope.decoding",
    "decode_features": "featscope.decoding",
    "DecodeOutput": "featscope.decoding",
    "solve_universal": "featscope.solvers.universal",
    "FeatscopeError": "featscope.errors",
    "load_backbone": "featscope.backbones",
    "load_extractor": "featscope.extractors",
    "list_layers": "featscope.extractors",
    "PRESETS": "featscope.solvers.configs",
    "UniversalConfig": "featscope.solvers.configs",
    "preset": "featscope.solvers.configs",
    "build_targets": "featscope.targets",
    "save_feature": "featscope.targets",
    "run_bench": "featscope.bench",
    "optimize": "featscope.solvers.endtoend",
    "EndToEndConfig": "featscope.solvers.configs",
    "null_text_invert": "featscope.inversion",
    "objectives": "featscope.objectives",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_getattr("featscope", _EXPORTS)
