"""featscope: see what a vision network's feature space encodes, by generating images with diffusion models.

Public API (imported lazily, so that ``featscope --help`` starts fast)::

    import featscope
    result = featscope.decode("target.png")                       # embedded world defaults
    result = featscope.decode("cat.jpg", backbone="sd:CompVis/stable-diffusion-v1-4",
                              extractor="torchvision:resnet50", preset="reference")
"""

from importlib import import_module

from featscope._version import __version__

_EXPORTS = {
    "decode": "featscope.decoding",
    "DecodeResult": "featscope.decoding",
    "FeatscopeError": "featscope.errors",
    "load_backbone": "featscope.backbones",
    "load_extractor": "featscope.extractors",
    "list_layers": "featscope.extractors",
    "PRESETS": "featscope.solvers.universal",
    "UniversalConfig": "featscope.solvers.universal",
    "preset": "featscope.solvers.universal",
    "build_targets": "featscope.targets",
    "save_feature": "featscope.targets",
    "run_bench": "featscope.bench",
    "optimize": "featscope.solvers.endtoend",
    "EndToEndConfig": "featscope.solvers.endtoend",
    "null_text_invert": "featscope.inversion",
    "objectives": "featscope.objectives",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = import_module(_EXPORTS[name])
        return module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
    raise AttributeError(f"module 'featscope' has no attribute {name!r}")
