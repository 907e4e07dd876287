"""The Extractor: the network under study, taking images in [0, 1] at any size to a layer's features."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featscope.errors import SpecError, suggest
from featscope.extractors.hooks import layer_activation
from featscope.extractors.spec import size_suffix

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def straight_through_round(x: torch.Tensor) -> torch.Tensor:
    """Round to integers in the forward pass, identity gradient in the backward pass."""
    return x + (x.round() - x).detach()


class Extractor(nn.Module):
    """A frozen network with its differentiable preprocessing and a chosen layer.

    ``forward(images)`` takes (B, 3, H, W) in [0, 1] and returns the features (B, ...) of ``layer``
    (the network's output when ``layer`` is None). Preprocessing: optional straight-through 8-bit
    rounding, antialiased bicubic resize to ``input_size``, rounding again, normalisation by ``mean``/``std``.
    ``labels`` names the classes of the network's output when it is a classifier (else None).
    ``guidance_clip`` is the published decoder's gradient-clip threshold for this network, where it used
    another than the default (ViT-H/14: 2.0); the ``reference`` preset takes it. The resize antialiases, as
    torchvision's ``resize`` does by default and the targets' PIL resize does.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        layer: str | None = None,
        input_size: tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        quantize: bool = False,
        text_encoder: Callable[[list[str]], torch.Tensor] | None = None,
        labels: Sequence[str] | None = None,
        guidance_clip: float | None = None,
    ) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.input_size = tuple(input_size) if input_size is not None else None
        self.quantize = quantize
        self.text_encoder = text_encoder
        self.labels = tuple(labels) if labels is not None else None
        self.guidance_clip = guidance_clip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.spec_size: tuple[int, int] | None = None  # an input size the spec set (@SIZEpx)
        self.layer = None
        if layer is not None:
            self.set_layer(layer)

    def with_input_size(self, size: tuple[int, int]) -> Extractor:
        """Resize images to ``size`` (H, W) before the network, as the spec suffix ``@SIZEpx`` asks."""
        if min(size) < 1:
            raise SpecError(f"the input size of {self.name} must be positive, not {size[0]}x{size[1]}")
        self.input_size = self.spec_size = (int(size[0]), int(size[1]))
        return self

    @property
    def spec(self) -> str:
        """The spec that loads this network, layer and input size again: ``NAME[@LAYER][@SIZEpx]``."""
        layer = f"@{self.layer}" if self.layer is not None else ""
        return f"{self.name}{layer}{size_suffix(self.spec_size)}"

    # -- layers -----------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names of the network's modules, usable as ``layer`` (``spec@layer``)."""
        return [n for n, _ in self.network.named_modules() if n]

    def set_layer(self, layer: str | None) -> Extractor:
        if layer is not None:
            names = self.layer_names()
            if layer not in names:
                raise SpecError(
                    f"{self.name} has no layer {layer!r}{suggest(layer, names)} "
                    f"(list them with: featscope layers {self.name})"
                )
        self.layer = layer
        return self

    # -- features ---------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable preprocessing of images in [0, 1] into the network's input."""
        x = images.float()
        if self.quantize:
            x = straight_through_round(x * 255) / 255
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", antialias=True, align_corners=False)
            if self.quantize:
                x = straight_through_round(x * 255) / 255
        return (x - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.layer is None:
            return self.network(x)
        features = layer_activation(self.network, x, self.layer)
        if features is None:
            raise SpecError(f"layer {self.layer!r} of {self.name} does not run when images are encoded; pick another")
        return features

    @torch.no_grad()
    def target_features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of real target images, resized as a PIL pipeline would (antialiased, centre crop)."""
        x = images.float()
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            h, w = x.shape[-2:]
            th, tw = self.input_size
            scale = max(th / h, tw / w)
            size = (max(th, round(h * scale)), max(tw, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
            x = x[..., top : top + th, left : left + tw]
        return self(x)

    # -- text -------------------------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        return self.text_encoder is not None

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Text features in the image-feature space (CLIP-family networks only)."""
        if self.text_encoder is None:
            raise SpecError(
                f"{self.name} has no text tower, so a text target cannot be encoded; "
                "use an image or tensor target, or a CLIP-family extractor (clip:RN50, open_clip:ARCH/PRETRAINED)"
            )
        return self.text_encoder(texts)
