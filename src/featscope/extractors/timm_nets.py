"""timm models: ``timm:NAME[.TAG]``, with timm's resolved data config as preprocessing."""

from __future__ import annotations

from pathlib import Path

import timm
from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_model_data_config

from featscope.errors import InputFileError, SpecError, suggest
from featscope.extractors.base import Extractor
from featscope.extractors.checkpoint import one_line
from featscope.extractors.spec import Spec


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """A timm model (its output: logits); ``weights`` goes through timm's own loader as a local file."""
    if not timm.is_model(spec.name):
        raise SpecError(f"unknown timm model {spec.name!r}{suggest(spec.name, timm.list_models())}")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputFileError(f"weights file {path} does not exist")
        try:
            network = timm.create_model(spec.name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except Exception as error:  # unreadable file or state dict that does not fit
            raise InputFileError(f"weights file {path} does not fit {spec.base}: {one_line(error)}") from error
    elif pretrained:
        try:
            network = timm.create_model(spec.name, pretrained=True)
        except Exception as error:  # offline hub, missing weights
            raise SpecError(
                f"{spec.base} needs pretrained weights that could not be loaded ({one_line(error)}); "
                f"{_where(spec.name)}"
            ) from error
    else:
        network = timm.create_model(spec.name)
    config = resolve_model_data_config(network)
    return Extractor(
        network,
        name=spec.base,
        layer=spec.layer,
        input_size=tuple(config["input_size"][-2:]),
        mean=config["mean"],
        std=config["std"],
        labels=_labels(network),
    )


def _where(name: str) -> str:
    """Where the user can fetch the weights by hand."""
    cfg = timm.models.get_pretrained_cfg(name)
    source = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg and cfg.hf_hub_id else cfg and cfg.url
    fetch = f"download them from {source} and " if source else ""
    return f"{fetch}pass weights=PATH (--extractor-weights PATH)"


def _labels(network) -> list[str] | None:
    """Short ImageNet class names when the model's classifier is an ImageNet one."""
    subset = infer_imagenet_subset(network) if getattr(network, "num_classes", 0) else None
    if subset is None:
        return None
    return [text.split(",")[0] for text in ImageNetInfo(subset).label_descriptions()]
