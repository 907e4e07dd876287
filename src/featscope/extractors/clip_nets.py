"""CLIP models from open_clip: ``clip:ARCH`` (OpenAI weights) and ``open_clip:ARCH/PRETRAINED``."""

from __future__ import annotations

import os
from pathlib import Path

import open_clip
import torch
from torch import nn

from featscope.errors import InputFileError, SpecError, suggest
from featscope.extractors.base import CLIP_MEAN, CLIP_STD, Extractor
from featscope.extractors.checkpoint import one_line
from featscope.extractors.spec import Spec

SCHEMAS = ("hf-hub:", "local-dir:")
WEIGHTS_HINT = "pass weights=PATH (--extractor-weights PATH)"


class ClipImage(nn.Module):
    """open_clip's ``encode_image`` (unnormalised) as a module; only the image tower is a child (``visual.*``)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.visual = clip.visual
        self.encode_image = clip.encode_image

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode_image(images)


class ClipText(nn.Module):
    """open_clip's tokenizer and ``encode_text`` (unnormalised): a list of strings to (N, D) features."""

    def __init__(self, clip: nn.Module, model_name: str) -> None:
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.model_name = model_name
        self.tokenizer = None

    def forward(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:  # lazily: some tokenizers come from the hub, and most runs need no text
            try:
                self.tokenizer = open_clip.get_tokenizer(self.model_name)
            except Exception as error:  # offline hub
                raise SpecError(f"cannot load the tokenizer of {self.model_name}: {one_line(error)}") from error
        device = next(self.clip.parameters()).device
        return self.clip.encode_text(self.tokenizer(list(texts)).to(device))


def build(spec: Spec, weights: str | None, pretrained: bool) -> Extractor:
    """``clip:ARCH``: OpenAI CLIP as published (CLIP statistics, 8-bit quantised input). ``open_clip:ARCH/TAG``:
    any open_clip model, TAG a pretrained tag or a checkpoint path, with its own preprocessing statistics."""
    arch, tag = (spec.name, "openai") if spec.family == "clip" else _split(spec)
    checkpoint = _checkpoint(spec, arch, tag, weights)
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    source = checkpoint if checkpoint is not None else (tag if pretrained else None)
    try:
        clip = open_clip.create_model(arch, pretrained=source, force_quick_gelu=tag_cfg.get("quick_gelu", False))
    except Exception as error:  # a failed download, or a checkpoint that does not fit
        if checkpoint is not None:
            raise InputFileError(f"weights file {checkpoint} does not fit {spec.base}: {one_line(error)}") from error
        raise SpecError(
            f"{spec.base} needs the pretrained weights {tag!r} of {arch}, which could not be loaded "
            f"({one_line(error)}); download {_where(tag_cfg)} and {WEIGHTS_HINT} or use open_clip:{arch}/PATH"
        ) from error
    cfg = clip.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"], cfg["size"])
    is_clip = spec.family == "clip"
    return Extractor(
        ClipImage(clip),
        name=spec.base,
        layer=spec.layer,
        input_size=tuple(size),
        mean=CLIP_MEAN if is_clip else cfg["mean"],
        std=CLIP_STD if is_clip else cfg["std"],
        quantize=is_clip,
        text_encoder=ClipText(clip, arch),
    )


def _split(spec: Spec) -> tuple[str, str | None]:
    """``ARCH/TAG`` into its parts; schema names (hf-hub:ORG/REPO, local-dir:PATH) carry their own weights."""
    if spec.name.startswith(SCHEMAS):
        return spec.name, None
    arch, _, tag = spec.name.partition("/")
    return arch, tag or None


def _checkpoint(spec: Spec, arch: str, tag: str | None, weights: str | None) -> str | None:
    """The local checkpoint file to load (``weights``, or a path given as TAG); validates names and tags."""
    if arch.startswith(SCHEMAS):
        return weights
    if arch not in open_clip.list_models():
        raise SpecError(f"unknown open_clip model {arch!r}{suggest(arch, open_clip.list_models())}")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    path = weights if weights is not None else (tag if tag and not open_clip.get_pretrained_cfg(arch, tag) else None)
    if path is None and tag is None:
        raise SpecError(
            f"{spec.base} needs pretrained weights: write open_clip:{arch}/TAG with TAG one of "
            f"{', '.join(tags) or '(none published)'} or a checkpoint path, or {WEIGHTS_HINT}"
        )
    if path is not None and not Path(path).expanduser().is_file():
        known = f"; known tags: {', '.join(tags)}" if weights is None and tags else ""
        raise InputFileError(f"{path} is neither a pretrained tag of {arch} nor a weights file{known}")
    return str(Path(path).expanduser()) if path is not None else None


def _where(tag_cfg: dict) -> str:
    """Where the published checkpoint of a tag can be fetched by hand."""
    if tag_cfg.get("hf_hub"):
        repo, filename = os.path.split(tag_cfg["hf_hub"])  # as open_clip reads it: ORG/REPO/[FILENAME]
        return f"{filename or 'open_clip_pytorch_model.bin'} from https://huggingface.co/{repo}"
    return tag_cfg.get("url") or "the checkpoint"
