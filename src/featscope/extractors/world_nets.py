"""The embedded world's classifiers: ``world:shape-net``, ``world:color-net``, ``world:spurious-net``."""

from __future__ import annotations

from pathlib import Path

import featscope.world
from featscope.errors import InputFileError, SpecError, suggest
from featscope.extractors.base import Extractor
from featscope.extractors.checkpoint import one_line
from featscope.extractors.spec import Spec
from featscope.world.models import CLASSIFIER_TASKS, labels_of, load_classifier
from featscope.world.render import IMAGE_SIZE

WEIGHTS_DIR = Path(featscope.world.__file__).parent / "weights"
DEFAULT_LAYER = "pool"


def weights_path(name: str) -> Path:
    """The packaged weights file of world classifier ``name``."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """A world CNN on [0, 1] 32x32 images; default layer ``pool`` (128-d); ``labels`` from its weights file."""
    if spec.name not in CLASSIFIER_TASKS:
        raise SpecError(
            f"unknown world model {spec.name!r}{suggest(spec.name, CLASSIFIER_TASKS)} "
            f"(known: {', '.join(CLASSIFIER_TASKS)})"
        )
    path = Path(weights).expanduser() if weights is not None else weights_path(spec.name)
    fix = "check the file" if weights is not None else "reinstall featscope or retrain it with `featscope world train`"
    if not path.is_file():
        raise InputFileError(f"world model {spec.name}: weights file {path} is missing; {fix}")
    try:
        network, meta = load_classifier(path)
    except Exception as error:  # any failure to parse means a bad file
        raise InputFileError(f"world model {spec.name}: cannot read {path} ({one_line(error)}); {fix}") from error
    return Extractor(
        network,
        name=spec.base,
        layer=spec.layer or DEFAULT_LAYER,
        input_size=(IMAGE_SIZE, IMAGE_SIZE),
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        labels=meta.get("labels") or labels_of(spec.name),
    )
