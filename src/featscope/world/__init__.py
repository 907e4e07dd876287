"""The embedded world: rendered images with known attributes, its classifiers and its diffusion model.

Its models reach featscope's specs through ``featscope.world.plugin`` (``world:ddpm``, ``world:shape-net``, ...).
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped weights
BACKBONES = ("ddpm",)  # the shipped diffusion model: world:ddpm
CLASSIFIER_TASKS: dict[str, str] = {"shape-net": "shape", "color-net": "color", "spurious-net": "shape"}  # -> attribute
