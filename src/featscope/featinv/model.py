"""The FeatInv model: a diffusers ControlNetModel copied from the backbone's UNet, conditioned on feature maps."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from featscope.backbones import Backbone, load_backbone
from featscope.errors import FeatscopeError, InputFileError
from featscope.extractors import Extractor, load_extractor
from featscope.extractors.spec import size_suffix
from featscope.featinv.adapter import FeatureAdapter
from featscope.featinv.features import channels_of, detect_layout
from featscope.runs import atomic_write_bytes, atomic_write_json
from featscope.targets import feature_shape

DEFAULT_PROMPT = "a high-quality, detailed, and professional image"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "featscope-featinv"


@dataclass
class FeatInvConfig:
    """What a FeatInv model conditions on and how it was built (saved as ``config.json``)."""

    backbone: str
    extractor: str  # NAME@LAYER[@SIZEpx]: the spec that loads the network at the size it was trained at
    layer: str
    feature_shape: list[int]  # one image's feature, as the extractor returns it
    channels: int
    layout: str  # nchw, nhwc, tokens (class token dropped) or patches
    grid: list[int]  # the diffusion state's (h, w): the latent grid, or the image grid for pixel models
    image_size: int  # square side of the images the extractor sees in training (before its own resize)
    adapter_width: int = 512
    prompt: str = DEFAULT_PROMPT
    extractor_weights: str | None = None
    trained_steps: int = 0
    backbone_config: str | None = None  # diffusers config of a single-file backbone (--backbone-config)

    def identity(self) -> tuple:
        """What must match for a checkpoint or a feature map to belong to this model."""
        return (self.extractor, tuple(self.feature_shape), self.layout, self.adapter_width, tuple(self.grid))

    def describe(self) -> str:
        return f"{self.extractor} features {tuple(self.feature_shape)} on {self.backbone}"


class FeatInvModel(nn.Module):
    """A ControlNet whose conditioning embedding is a ``FeatureAdapter``; ``config`` records the network."""

    def __init__(self, controlnet: ControlNetModel, config: FeatInvConfig) -> None:
        super().__init__()
        controlnet.controlnet_cond_embedding = FeatureAdapter(
            config.channels,
            config.adapter_width,
            controlnet.config.block_out_channels[0],
            tuple(config.grid),
            config.layout,
        )
        self.controlnet = controlnet
        self.config = config

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        features: torch.Tensor,
        scale: float = 1.0,
        added_cond_kwargs: dict | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The 13-style down residuals and the mid residual for the UNet, scaled by ``scale``.

        ``text``: the UNet's ``encoder_hidden_states``; ``added_cond_kwargs``: SDXL's pooled text embedding and
        time ids (``Backbone.unet_kwargs`` unpacks both), which the ControlNet copied from the UNet takes too.
        """
        return self.controlnet(
            z,
            t,
            encoder_hidden_states=text,
            controlnet_cond=features,
            conditioning_scale=scale,
            added_cond_kwargs=added_cond_kwargs,
            return_dict=False,
        )

    def save(self, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` (FeatInv and ControlNet configs) and ``model.safetensors`` (optionally cast)."""
        folder = Path(folder)
        state = {k: (v.to(dtype) if dtype else v).detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS_FILE, save_safetensors(state, metadata={"format": FORMAT}))
        controlnet = {k: v for k, v in self.controlnet.config.items() if not k.startswith("_")}
        atomic_write_json(
            folder / CONFIG_FILE, {"format": FORMAT, "featinv": asdict(self.config), "controlnet": controlnet}
        )
        return folder


def _read_config(folder: Path) -> dict:
    fix = "give a folder written by `featscope featinv init` or `featscope featinv train` (RUN/model)"
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise InputFileError(f"{folder} holds no FeatInv model ({CONFIG_FILE} and {WEIGHTS_FILE}); {fix}")
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError) as error:
        raise InputFileError(f"cannot read {folder / CONFIG_FILE} ({type(error).__name__}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputFileError(f"{folder / CONFIG_FILE} is not a FeatInv model config; {fix}")
    return data


def load_model(folder: str | Path) -> FeatInvModel:
    """A FeatInv model saved by ``FeatInvModel.save`` (weights loaded as float32)."""
    folder = Path(folder).expanduser()
    data = _read_config(folder)
    known = {f.name for f in fields(FeatInvConfig)}
    config = FeatInvConfig(**{k: v for k, v in data["featinv"].items() if k in known})
    model = FeatInvModel(ControlNetModel.from_config(data["controlnet"]), config)
    try:
        state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
        model.load_state_dict(state)
    except Exception as error:  # a truncated or foreign weights file
        raise InputFileError(f"{folder / WEIGHTS_FILE} does not match its config ({type(error).__name__})") from None
    return model.eval()


def backbone_of(config: FeatInvConfig, **options) -> Backbone:
    """The backbone a model was built on (with its single-file config), loaded with ``options`` (device, dtype)."""
    return load_backbone(config.backbone, config=config.backbone_config, **options)


def default_prompt(backbone: Backbone) -> str:
    """The published fixed prompt; empty for prompt encoders with a closed vocabulary (``free_text_prompts`` off:
    the world's, which knows attribute words only)."""
    return DEFAULT_PROMPT if backbone.free_text_prompts else ""


def image_size_for(backbone: Backbone, extractor: Extractor) -> int:
    """Square side at which training images are loaded: large enough for the backbone and the extractor."""
    return max(*backbone.image_size, *(extractor.input_size or (0,)))


def build(
    backbone: str | Backbone,
    extractor: str | Extractor,
    *,
    adapter_width: int = 512,
    prompt: str | None = None,
    extractor_weights: str | None = None,
    backbone_config: str | None = None,
    seed: int = 0,
) -> FeatInvModel:
    """A new FeatInv model: ``ControlNetModel.from_unet(backbone.unet)`` with a feature-map adapter.

    ``extractor`` must name a layer with a spatial map (``SPEC@LAYER``, optionally ``@SIZEpx``); ``prompt``
    defaults to the published fixed prompt (empty for closed-vocabulary prompt encoders, such as the world's);
    ``backbone_config`` is the diffusers config of a single-file backbone (kept for loading it again). The
    adapter's init is seeded.
    """
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, config=backbone_config)
    if isinstance(extractor, str):
        extractor = load_extractor(extractor, weights=extractor_weights)
    if not isinstance(backbone.unet, UNet2DConditionModel):
        raise FeatscopeError(
            f"{backbone.spec} has a {type(backbone.unet).__name__}; a ControlNet needs a text-conditioned "
            "UNet2DConditionModel backbone (sd:..., sdxl:..., world:ddpm or a caption-conditioned pixel: folder)"
        )
    if extractor.layer is None:
        raise FeatscopeError(
            f"name the layer to condition on: {extractor.name}@LAYER{size_suffix(extractor.spec_size)} "
            f"(featscope layers {extractor.spec})"
        )
    size = image_size_for(backbone, extractor)
    shape = feature_shape(extractor, (size, size))
    what = extractor.spec
    layout = detect_layout(shape, what)
    if adapter_width < 1:
        raise FeatscopeError(f"the adapter width must be a positive number of channels, not {adapter_width}")
    config = FeatInvConfig(
        backbone=backbone.spec,
        extractor=what,
        layer=extractor.layer,
        feature_shape=list(shape),
        channels=channels_of(shape, layout),
        layout=layout,
        grid=list(backbone.latent_shape[1:]),
        image_size=size,
        adapter_width=adapter_width,
        prompt=default_prompt(backbone) if prompt is None else prompt,
        extractor_weights=extractor_weights,
        backbone_config=None if backbone_config is None else str(backbone_config),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(backbone.unet).float()
        return FeatInvModel(controlnet, config)


def check_backbone(model: FeatInvModel, backbone: Backbone) -> None:
    """Refuse a backbone whose UNet is not the one the ControlNet was copied from (by architecture)."""
    keys = ("in_channels", "block_out_channels", "cross_attention_dim", "down_block_types", "addition_embed_type")
    ours = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in model.controlnet.config.items() if k in keys}
    theirs = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in backbone.unet.config.items() if k in keys}
    if ours != theirs or list(backbone.latent_shape[1:]) != list(model.config.grid):
        raise FeatscopeError(
            f"the FeatInv model was built for {model.config.backbone}, whose UNet differs from {backbone.spec}'s; "
            "use the backbone it was built with"
        )


def check_extractor(model: FeatInvModel, extractor: Extractor) -> None:
    """Refuse an extractor other than the network and layer the model conditions on."""
    if extractor.spec != model.config.extractor:
        raise FeatscopeError(
            f"the FeatInv model was trained on {model.config.extractor}, not {extractor.spec}; "
            "use that network, layer and input size or train a model for this one"
        )


def grid_channels(features: torch.Tensor, model: FeatInvModel, source: str) -> torch.Tensor:
    """``features`` as a batch (N, *feature dims), checked against the model's layout and channel count."""
    config = model.config
    rank = len(config.feature_shape)
    if features.dim() == rank:
        features = features[None]
    if features.dim() != rank + 1:
        raise FeatscopeError(
            f"feature map {source} has shape {tuple(features.shape)}; the model takes {tuple(config.feature_shape)} "
            f"(or N of them) from {config.extractor}"
        )
    channels = channels_of(tuple(features.shape[1:]), config.layout)
    if channels != config.channels:
        raise FeatscopeError(
            f"feature map {source} has {channels} channels but the model was trained on {config.channels}-channel "
            f"maps of {config.extractor} (shape {tuple(config.feature_shape)}); encode it with that network and layer"
        )
    return features
