"""The embedded world: rendered images with known attributes, its classifiers and its diffusion model.

Its models reach featscope's specs through ``featscope.world.plugin`` (``world:ddpm``, ``world:shape-net``, ...).
"""

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"  # the shipped weights
BACKBONES = ("ddpm", "latent")  # world:ddpm (pixel space, 32 px), world:latent (Stable Diffusion 1.x's layout, 64 px)
CLASSIFIER_TASKS: dict[str, str] = {  # network -> the attribute it labels (their tasks: world.classifier_tasks)
    "shape-net": "shape",
    "color-net": "color",
    "spurious-net": "shape",
    "shape-net-64": "shape",
    "color-net-64": "color",
    "pattern-net": "shape",
    "tag-net": "shape",
}
