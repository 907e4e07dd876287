"""The caption of a real image: the prompt given, else the caption written beside the image, else a captioning
model's, else the template with the image's class name."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from featscope.captioning import Captioner, load_captioner
from featscope.datasets import ImageItem
from featscope.investigate.inputs import template
from featscope.investigate.settings import NO_PREFIX, CaptionSettings
from featscope.world.sample import RECORDS

if TYPE_CHECKING:
    from featscope.backbones.base import Backbone
    from featscope.extractors.base import Extractor

S = TypeVar("S", bound=CaptionSettings)


@dataclass
class Captions:
    """How a run captions its real images: ``prompt`` (``{label}`` = the class), else the image's known caption
    (:func:`known_caption`, like DiG-IN's Open-Flamingo captions), else the ``captioner``'s (continuing
    ``caption_prefix`` with the class, so that the class word is in it), else ``template``."""

    prompt: str | None
    template: str
    captioner: Captioner | None = None
    caption_prefix: str | None = None  # the captioner's prompt, with {label}

    @classmethod
    def load(cls, options: CaptionSettings, backbone: Backbone, device: torch.device | str) -> Captions:
        """The captions of ``options`` on ``backbone`` (its family's template unless one is given), with the
        captioning model loaded on ``device``."""
        model = options.caption_model
        captioner = load_captioner(model, device) if model is not None else None
        prefix = None if options.caption_prefix == NO_PREFIX else options.caption_prefix
        return cls(options.prompt, template(options.prompt_template, backbone), captioner, prefix)

    def used(self, options: S) -> S:
        """``options`` with the template these captions use, as ``config.yaml`` records it."""
        return replace(options, prompt_template=self.template)

    def of(self, item: ImageItem, label: str) -> str:
        """The caption of ``item`` whose class is ``label``."""
        if self.prompt is not None:
            return self.prompt.replace("{label}", label)
        known = known_caption(item.path)
        if known is not None:
            return known
        if self.captioner is not None:
            prefix = self.caption_prefix.format(label=label) if self.caption_prefix and label else None
            return self.captioner.caption([item.path], prefix)[0]
        return self.template.format(label=label)

    def of_entry(self, item: ImageItem) -> str:
        """The caption of an image whose class is its dataset folder's; a loose file without a caption of its own
        gets the empty caption (not the template)."""
        plain = self if item.class_name else replace(self, template="{label}")
        return plain.of(item, item.class_name)


def known_caption(path: Path) -> str | None:
    """An image's caption written beside it: ``<image>.txt``, else its line in the ``records.jsonl`` of its folder
    (as ``featscope world sample`` writes them); None when there is neither."""
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    records = path.parent / RECORDS
    if not records.is_file():
        return None
    return _record_captions(str(records), records.stat().st_mtime_ns).get(path.name)


@functools.lru_cache(maxsize=8)
def _record_captions(path: str, mtime: int) -> dict[str, str]:
    """file name -> caption of a records.jsonl (``mtime`` keys the cache); lines without both are skipped."""
    captions = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("file"), str) and isinstance(record.get("caption"), str):
            captions[record["file"]] = record["caption"]
    return captions


@dataclass
class ImageRun:
    """What a run over real images holds: the backbone, the network, the method's settings and the solver's, the
    captions, and ``quiet``; each method's run adds its own."""

    model: Backbone
    network: Extractor
    options: Any
    solver: Any
    captions: Captions
    quiet: bool
