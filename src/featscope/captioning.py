"""Captions of real images from a transformers image-to-text model (BLIP, BLIP-2, GIT, ...).

``load_captioner(SPEC)`` takes a folder saved with ``save_pretrained`` (the model and its processor) or a hub
id; a hub id is read from the local Hugging Face cache when it is there, and refused with one line when it is
not and the hub is offline (``HF_HUB_OFFLINE=1``). The inversion-based investigations (``invert``,
``counterfactual``, ``word-swap``, ``neuron --images``) take it as ``--caption-model SPEC``; their caption of
an image is, first to last: the explicit ``--prompt``, an ``IMAGE.txt`` beside the image, the captioning
model's caption, the template with the class name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from featscope.errors import FeatscopeError, InputFileError, reason

LAYOUT = "a folder saved with save_pretrained (an image-to-text model such as BLIP, and its processor) or a hub id"


@dataclass
class Captioner:
    """A loaded image-to-text model and its processor; :meth:`caption` writes one caption per image."""

    model: torch.nn.Module
    processor: object
    spec: str
    max_new_tokens: int = 20

    @torch.no_grad()
    def caption(self, images: Sequence[str | Path | torch.Tensor], prefix: str | None = None) -> list[str]:
        """One caption per image: a file, or a (3, H, W) tensor in [0, 1]; greedy decoding. ``prefix`` (e.g. DiG-IN's
        ``an image of a cat``) is the text the caption continues, and every caption starts with it."""
        pictures = [_picture(image) for image in images]
        device = next(self.model.parameters()).device
        text = {} if prefix is None else {"text": [prefix] * len(pictures)}
        inputs = self.processor(images=pictures, return_tensors="pt", **text).to(device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        captions = [" ".join(text.split()) for text in self.processor.batch_decode(out, skip_special_tokens=True)]
        return [_prefixed(c, prefix) for c in captions] if prefix else captions


def _prefixed(caption: str, prefix: str) -> str:
    """``caption`` starting with ``prefix``: models that return only the continuation get the prefix put back."""
    return caption if caption.lower().startswith(prefix.lower()) else f"{prefix} {caption}".strip()


def _picture(image: str | Path | torch.Tensor):
    """A PIL RGB image of a file or of a (3, H, W) tensor in [0, 1]."""
    from PIL import Image

    from featscope.images import load_image, to_uint8

    tensor = image[None] if torch.is_tensor(image) else load_image(image)
    return Image.fromarray(to_uint8(tensor)[0])


def _where(spec: str) -> tuple[str, bool]:
    """(what from_pretrained reads, whether to stay local): a folder, or a hub id (cached or not)."""
    from huggingface_hub import try_to_load_from_cache

    from featscope.backbones.latent import _offline

    folder = Path(spec).expanduser()
    if folder.is_dir():
        return str(folder), True
    if folder.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise InputFileError(f"captioning model {spec!r} is not a folder; give {LAYOUT}")
    try:
        cached = isinstance(try_to_load_from_cache(spec, "config.json"), str)
    except ValueError:
        raise InputFileError(f"captioning model {spec!r} is not a folder nor a hub id; give {LAYOUT}") from None
    if not cached and _offline():
        raise InputFileError(
            f"captioning model {spec!r} is not a folder and not in the local Hugging Face cache (the hub is "
            f"offline); give {LAYOUT}"
        )
    return spec, cached


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """The hub client's warnings (a line per retry of a download) silenced: a failure is one error line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_captioner(spec: str, device: torch.device | str = "cpu", *, max_new_tokens: int = 20) -> Captioner:
    """The image-to-text model ``spec`` (a folder or a hub id) on ``device``; one-line errors if it cannot load."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    where, local = _where(spec)
    try:
        with _quiet_hub():
            model = AutoModelForImageTextToText.from_pretrained(where, local_files_only=local)
            processor = AutoProcessor.from_pretrained(where, local_files_only=local)
    except Exception as exc:  # loader and hub errors come in many types
        raise FeatscopeError(f"cannot load the captioning model {spec!r} ({reason(exc)}); give {LAYOUT}") from exc
    return Captioner(model.to(device).eval(), processor, spec, max_new_tokens)
