"""torchvision image classifiers: ``torchvision:NAME``, with the reference presets resnet50 and vit_h_14."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from featscope.errors import SpecError, suggest
from featscope.extractors.base import IMAGENET_MEAN, IMAGENET_STD, Extractor
from featscope.extractors.checkpoint import load_weights, one_line
from featscope.extractors.spec import Spec

# name -> (weights tag, classifier head replaced by nn.Identity), as the published decoder uses them
PRESETS: dict[str, tuple[str, str]] = {
    "resnet50": ("IMAGENET1K_V1", "fc"),
    "vit_h_14": ("IMAGENET1K_SWAG_E2E_V1", "heads.head"),
}
GUIDANCE_CLIP = {"vit_h_14": 2.0}  # the published decoder's gradient-clip threshold where it is not the default
WEIGHTS_HINT = "pass weights=PATH (--extractor-weights PATH)"


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """A torchvision classifier with its weights enum's preprocessing (presets: headless, 8-bit quantised)."""
    from torchvision import models

    names = models.list_models(module=models)
    if spec.name not in names:
        raise SpecError(f"unknown torchvision image classifier {spec.name!r}{suggest(spec.name, names)}")
    builder = models.get_model_builder(spec.name)
    tag, head = PRESETS.get(spec.name, ("DEFAULT", None))
    choice = models.get_model_weights(spec.name)[tag]
    if weights is None and pretrained:
        network = _pretrained(builder, choice, spec)
    else:
        network = builder(weights=None, **_arch_kwargs(spec.name, choice.meta))
    if head is not None:
        parent, _, child = head.rpartition(".")
        setattr(network.get_submodule(parent), child, nn.Identity())
    if weights is not None:
        load_weights(network, weights, what=spec.base, drop_prefix=head)
    transforms = choice.transforms()
    size = getattr(transforms, "crop_size", [224])[0]
    return Extractor(
        network,
        name=spec.base,
        layer=spec.layer,
        input_size=(size, size),
        mean=getattr(transforms, "mean", IMAGENET_MEAN),
        std=getattr(transforms, "std", IMAGENET_STD),
        quantize=spec.name in PRESETS,
        labels=None if head is not None else choice.meta.get("categories"),
        guidance_clip=GUIDANCE_CLIP.get(spec.name),
    )


def _pretrained(builder, choice, spec: Spec) -> nn.Module:
    """The network with its published weights, from torch hub's cache or downloaded into it."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(choice.url).path).name
    try:
        return builder(weights=choice)
    except Exception as error:  # a failed download or an unreadable cache file
        if cached.is_file():
            raise SpecError(
                f"{spec.base}: cannot load the cached weights {cached} ({one_line(error)}); "
                f"delete it to download it again, or {WEIGHTS_HINT}"
            ) from error
        raise SpecError(
            f"{spec.base} needs the weights file {cached.name}, which could not be downloaded ({one_line(error)}); "
            f"download {choice.url} into {cached.parent}, or {WEIGHTS_HINT}"
        ) from error


def _arch_kwargs(name: str, meta: dict) -> dict:
    """The constructor arguments torchvision derives from a weights enum, so that its state dicts fit."""
    kwargs: dict = {"num_classes": len(meta["categories"])} if "categories" in meta else {}
    if name.startswith("vit_"):
        kwargs["image_size"] = meta["min_size"][0]
    elif name.startswith("maxvit_"):
        kwargs["input_size"] = meta["min_size"]
    elif name in ("googlenet", "inception_v3"):
        kwargs.update(transform_input=True, aux_logits=False, init_weights=False)
    return kwargs
