"""Foreground masks of real images: cross-attention maps of the class word (DiG-IN §6), optionally refined by SAM;
a user's mask file and DiG-IN's post-processing of a mask.

The backbone's UNet runs the DDIM reconstruction of an inverted image with its caption; during the first
part of sampling a custom attention processor on every cross-attention layer (``attn2``) computes the
attention probabilities explicitly and keeps those of the class word's tokens. Their mean over tokens,
heads, layers (resized to the largest map) and steps, upsampled to the image and scaled to [0, 1] (min to
max), is the soft map; a threshold (a fraction of the maximum, or Otsu's) makes the foreground mask.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from featscope.errors import FeatscopeError, InputFileError
from featscope.images import save_image
from featscope.investigate.attention import explicit_attention, on_cross_attention
from featscope.investigate.common import fit_image
from featscope.investigate.settings import (  # noqa: F401 (the mask knob's values, used from here too)
    CROSS_ATTENTION,
    DEFAULT_THRESHOLD,
    MASK_KINDS,
    NO_MASK,
    PUBLISHED_MASK,
    PUBLISHED_POSTPROCESS,
    PUBLISHED_SIDE,
    SCALED,
    MaskSpec,
    parse_mask,
    postprocess_step,
)

if TYPE_CHECKING:  # backbones import diffusers (seconds): only when a mask is made
    from featscope.backbones.base import Backbone
    from featscope.runs import RunFolder


# -- tokens of the class word ---------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def word_tokens(backbone: Backbone, prompt: str, label: str) -> list[int]:
    """Positions in the prompt embedding of the tokens of ``label``'s words (all occurrences in ``prompt``).

    CLIP tokenizers (Stable Diffusion; SDXL's first, whose positions its second shares): each word's BPE tokens
    are looked up as a run in the tokenized prompt; a prompt encoder with a word-level tokenizer (the world's)
    says where the words are itself (``word_positions(prompt, words)``).
    """
    if not backbone.has_cross_attention:
        raise FeatscopeError(
            f"cross-attention masks and word swaps read a UNet's cross-attention, and {backbone.spec} attends to "
            "text and image jointly (SD3, Flux); use an sd: or sdxl: backbone, or give a PNG mask (--mask FILE)"
        )
    encoder = backbone.prompt_encoder
    tokenizers = getattr(encoder, "tokenizers", None)
    tokenizer = getattr(encoder, "tokenizer", None) or (tokenizers[0] if tokenizers else None)
    words = [w for w in _words(label) if w in _words(prompt)]
    if not words:
        raise FeatscopeError(
            f"the class word {label!r} is not in the caption {prompt!r}; cross-attention masks need it "
            "(give --prompt with the class name, or --mask none)"
        )
    if tokenizer is not None:
        ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
        found = []
        for word in words:
            run = tokenizer(word, add_special_tokens=False).input_ids
            starts = [i for i in range(len(ids) - len(run) + 1) if ids[i : i + len(run)] == run]
            found += [i + k for i in starts for k in range(len(run))]
    elif callable(getattr(encoder, "word_positions", None)):  # a word-level tokenizer (the world's)
        found = encoder.word_positions(prompt, words)
    else:
        raise FeatscopeError(f"{backbone.spec} has no tokenizer to find the class word in; use a PNG mask")
    if not found:
        raise FeatscopeError(f"the tokenizer of {backbone.spec} splits {label!r} differently in {prompt!r}")
    return sorted(set(found))


# -- capturing cross-attention --------------------------------------------------------------------
class CrossAttentionCapture:
    """An attention processor with explicit probabilities that keeps the mean over ``tokens`` (B, heads, h, w)."""

    def __init__(self, tokens: Sequence[int], latent_hw: tuple[int, int], maps: list[torch.Tensor]) -> None:
        self.tokens = list(tokens)
        self.latent_hw = latent_hw
        self.maps = maps
        self.active = True

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, edit=self._keep)

    def _keep(self, probs: torch.Tensor, batch: int) -> torch.Tensor:
        if not self.active:
            return probs
        n = probs.shape[1]
        lh, lw = self.latent_hw
        factor = (lh * lw / n) ** 0.5
        h, w = round(lh / factor), round(lw / factor)
        chosen = probs[..., self.tokens].float().mean(-1)
        self.maps.append(chosen.reshape(batch, -1, h, w).detach())
        return probs


@contextmanager
def capture_cross_attention(
    unet: torch.nn.Module, tokens: Sequence[int], latent_hw: tuple[int, int]
) -> Iterator[CrossAttentionCapture]:
    """Replace the processors of the ``attn2`` layers by one :class:`CrossAttentionCapture`; restore them after."""
    capture = CrossAttentionCapture(tokens, latent_hw, [])
    with on_cross_attention(unet, capture):
        yield capture


def _average(maps: list[torch.Tensor]) -> torch.Tensor:
    """Mean over heads, then over layers and steps, every map resized to the largest one: (B, 1, h, w)."""
    h = max(m.shape[-2] for m in maps)
    w = max(m.shape[-1] for m in maps)
    resized = [F.interpolate(m.mean(1, keepdim=True), size=(h, w), mode="bilinear", align_corners=False) for m in maps]
    return torch.stack(resized).mean(0)


@torch.no_grad()
def cross_attention_map(
    backbone: Backbone,
    x_t: torch.Tensor,
    prompt: str,
    label: str,
    *,
    null_texts: torch.Tensor | None = None,
    guidance_scale: float = 3.0,
    num_steps: int = 20,
    until: float = 0.5,
) -> torch.Tensor:
    """The soft cross-attention map (B, 1, H, W) in [0, 1] of ``label``'s words while DDIM regenerates x_T.

    Sampling uses CFG with the per-step ``null_texts`` (null-text inversion) or the empty prompt; the maps of the
    conditional pass are kept at steps i with i / (num_steps - 1) <= ``until`` (DiG-IN: the first half).
    """
    from featscope.inversion import ddim_move, ddim_schedule, null_embeddings
    from featscope.sampling import cfg_blend

    tokens = word_tokens(backbone, prompt, label)
    z = x_t.to(backbone.device, torch.float32)
    num_steps = len(null_texts) if null_texts is not None else num_steps
    schedule = ddim_schedule(backbone, num_steps, inverted=True)
    cond = backbone.encode_prompt([prompt] * len(z))
    uncond = null_embeddings(backbone, len(z), num_steps, null_texts)
    with capture_cross_attention(backbone.unet, tokens, tuple(backbone.latent_shape[1:])) as capture:
        for i, t in enumerate(schedule.timesteps):
            capture.active = False
            if i / max(num_steps - 1, 1) > until:
                break
            eps_u = backbone.eps(z, t, uncond[i])
            capture.active = True
            eps_c = backbone.eps(z, t, cond)
            z, _ = ddim_move(z, cfg_blend(eps_u, eps_c, guidance_scale), schedule.abar[i], schedule.abar_prev[i])
    m = F.interpolate(_average(capture.maps), size=backbone.image_size, mode="bicubic", align_corners=False)
    low, high = m.amin((2, 3), keepdim=True), m.amax((2, 3), keepdim=True)
    return ((m - low) / (high - low).clamp(min=1e-12)).clamp(0, 1).cpu()


# -- thresholds -----------------------------------------------------------------------------------
def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of values in [0, 1]: the cut that maximises the between-class variance."""
    hist = torch.histc(values.float().flatten(), bins=bins, min=0, max=1)
    p = hist / hist.sum()
    centres = (torch.arange(bins, dtype=torch.float32) + 0.5) / bins
    w0 = p.cumsum(0)
    m0 = (p * centres).cumsum(0)
    between = (m0[-1] * w0 - m0).pow(2) / (w0 * (1 - w0)).clamp(min=1e-12)
    return float(centres[int(between[:-1].argmax())] + 0.5 / bins)


def threshold_mask(soft: torch.Tensor, threshold: float | str = DEFAULT_THRESHOLD) -> torch.Tensor:
    """A binary foreground mask (same shape, 0/1 floats) of a soft map in [0, 1]: ``soft >= threshold``
    (``'otsu'``: Otsu's threshold of each map)."""
    if threshold == "otsu":
        cuts = torch.tensor([otsu_threshold(m) for m in soft]).view(-1, *[1] * (soft.dim() - 1))
        return (soft >= cuts).float()
    return (soft >= float(threshold)).float()


# -- SAM ------------------------------------------------------------------------------------------
SAM_LAYOUT = "a folder saved with SamModel.save_pretrained and SamProcessor.save_pretrained (SAM or SAM-HQ)"


def load_pretrained(source: str, model_class, *, what: str, layout: str):
    """(model, processor) of transformers ``from_pretrained``: a local folder, or a hub id unless offline."""
    from transformers import AutoProcessor

    from featscope.backbones.latent import _offline, reason

    folder = Path(source).expanduser()
    if not folder.is_dir() and (_offline() or folder.exists() or source.startswith((".", "/", "~"))):
        raise InputFileError(f"{what} {source!r} is not a folder (and the hub is offline); give {layout}")
    where = str(folder) if folder.is_dir() else source
    try:
        return model_class.from_pretrained(where).eval(), AutoProcessor.from_pretrained(where)
    except Exception as exc:  # loader and hub errors come in many types
        raise FeatscopeError(f"cannot load the {what} {source!r} ({reason(exc)}); give {layout}") from exc


def load_sam(source: str, device: torch.device | str = "cpu"):
    """A SAM / SAM-HQ model and its processor (transformers) from a local folder, or a hub id when online."""
    from transformers import AutoModel

    model, processor = load_pretrained(source, AutoModel, what="SAM model", layout=SAM_LAYOUT)
    if model.config.model_type not in ("sam", "sam_hq"):
        raise FeatscopeError(f"{source!r} holds a {model.config.model_type!r} model, not SAM or SAM-HQ")
    return model.to(device).eval(), processor


def sam_prompts(soft: torch.Tensor, threshold: float | str = DEFAULT_THRESHOLD) -> tuple[list[float], list[float]]:
    """SAM prompts from a soft map (H, W): the box around ``threshold_mask(soft)`` and its peak point (x, y)."""
    fg = threshold_mask(soft[None], threshold)[0] > 0
    ys, xs = torch.nonzero(fg, as_tuple=True)
    peak = int(soft.flatten().argmax())
    point = [float(peak % soft.shape[1]), float(peak // soft.shape[1])]
    if not len(xs):  # a flat map: the whole image
        return [0.0, 0.0, float(soft.shape[1]), float(soft.shape[0])], point
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return box, point


@torch.no_grad()
def sam_mask(sam, image: torch.Tensor, soft: torch.Tensor, threshold: float | str = DEFAULT_THRESHOLD) -> torch.Tensor:
    """SAM's binary mask (1, 1, H, W) of ``image`` (1, 3, H, W) in [0, 1], prompted with one positive point
    (the peak of the cross-attention map ``soft`` (1, 1, H, W)) inside its box (:func:`sam_prompts`)."""
    model, processor = sam
    box, point = sam_prompts(soft[0, 0], threshold)
    pixels = (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    inputs = processor(images=pixels, input_boxes=[[box]], input_points=[[[point]]], return_tensors="pt")
    device = next(model.parameters()).device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    out = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(out.pred_masks.cpu(), inputs["original_sizes"].cpu(),
                                         inputs["reshaped_input_sizes"].cpu())  # fmt: skip
    return masks[0][:1, :1].float()


# -- one call for the counterfactuals -------------------------------------------------------------
def foreground_mask(
    spec: MaskSpec,
    backbone: Backbone,
    image: torch.Tensor,
    x_t: torch.Tensor,
    prompt: str,
    label: str,
    *,
    null_texts: torch.Tensor | None = None,
    guidance_scale: float = 3.0,
    sam=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft cross-attention map, binary foreground mask), both (1, 1, H, W), of an inverted image."""
    soft = cross_attention_map(backbone, x_t, prompt, label, null_texts=null_texts, guidance_scale=guidance_scale)
    if spec.kind == "sam":
        mask = sam_mask(sam, image, soft, spec.threshold)
        return soft, mask if mask.any() else threshold_mask(soft, spec.threshold)
    return soft, threshold_mask(soft, spec.threshold)


# -- a run's masks ----------------------------------------------------------------------------------
def default_masking(mask: str | Path | None, steps: Sequence[str] | None, backbone: Backbone,
                    method: str = "counterfactual") -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """The foreground mask and post-processing a run of ``method`` uses on ``backbone``: those given, else the
    backbone family's (``featscope.world.plugin``), else DiG-IN's (a cross-attention mask, ``published``
    post-processing). A generated default mask becomes ``"none"`` on a backbone without cross-attention (SD3, Flux)."""
    from featscope.registry import backbone_settings

    defaults = backbone_settings(backbone.spec, method)
    if mask is None:
        mask = defaults.get("mask", PUBLISHED_MASK)
        if parse_mask(mask) is not None and not backbone.has_cross_attention:
            mask = NO_MASK
    if steps is None:
        steps = defaults.get("mask_postprocess", (SCALED,))
    return str(mask), tuple(step for step in steps if step != NO_MASK)


@dataclass
class ItemMasks:
    """How a run over real images gets each item's foreground mask: none, the user's PNG (``fixed``), or one made
    from each inverted image (``spec``: cross-attention or SAM, with the ``sam`` model); post-processed by ``steps``."""

    spec: MaskSpec | None
    sam: Any
    fixed: torch.Tensor | None
    steps: Sequence[str]
    given: bool  # a mask was asked for (mask.png is saved)

    @classmethod
    def load(cls, mask: str | None, images: Sequence[Path], size: tuple[int, int], steps: Sequence[str],
             device: torch.device | str) -> ItemMasks:  # fmt: skip
        """The masks of the knob value ``mask`` (None or ``"none"``: no mask), with a SAM model loaded on ``device``."""
        mask = None if mask == NO_MASK else mask
        spec = parse_mask(mask)
        sam = load_sam(spec.source, device) if spec is not None and spec.kind == "sam" else None
        fixed = user_mask(mask, images, size, steps) if mask is not None and spec is None else None
        return cls(spec, sam, fixed, tuple(steps), mask is not None)

    def of(self, run: RunFolder, backbone: Backbone, image: torch.Tensor, inverted: tuple[torch.Tensor, torch.Tensor],
           prompt: str, word: str, guidance_scale: float) -> torch.Tensor | None:  # fmt: skip
        """An item's mask: the user's, or one found from ``word`` in the inverted image (saved as attention.png);
        saved as mask.png."""
        mask = self.fixed
        if self.spec is not None:
            soft, found = foreground_mask(self.spec, backbone, image, inverted[0], prompt, word, null_texts=inverted[1],
                                          guidance_scale=guidance_scale, sam=self.sam)  # fmt: skip
            save_image(soft[0].expand(3, -1, -1), run.file("attention.png"))
            mask = postprocess_mask(found, self.steps)
        if self.given:
            save_image(mask[0].expand(3, -1, -1), run.file("mask.png"))
        return mask


# -- a user's mask file and post-processing -------------------------------------------------------
def load_mask(path: str | Path, image_size: tuple[int, int] | None, size: tuple[int, int]) -> torch.Tensor:
    """A user mask PNG (white = foreground) as (1, 1, *size) in [0, 1]; it must have the size of the image
    (``image_size``, before fitting) or of the backbone (``size``)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"mask file {str(path)!r} does not exist; check the path")
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise InputFileError(f"cannot read mask {str(path)!r} ({error}); give a PNG") from None
    h, w = gray.height, gray.width
    allowed = {tuple(size)} | ({tuple(image_size)} if image_size is not None else set())
    if (h, w) not in allowed:
        sizes = " or ".join(f"{a}x{b}" for a, b in sorted(allowed))
        raise InputFileError(f"mask {str(path)!r} is {h}x{w} pixels (HxW); it must be {sizes}, the image's size")
    import numpy as np

    mask = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255)[None, None]
    return fit_image(mask, size, mode="area") if (h, w) != tuple(size) else mask


def user_mask(path: str | Path, images: Sequence[Path], size: tuple[int, int], steps: Sequence[str]) -> torch.Tensor:
    """The user's mask PNG for ``images`` at the backbone's ``size``, post-processed by ``steps`` (it may have the
    images' size when they all share it)."""
    from PIL import Image

    shapes = set()
    for image in images:
        with Image.open(image) as im:
            shapes.add((im.height, im.width))
    image_size = shapes.pop() if len(shapes) == 1 else None
    return postprocess_mask(load_mask(path, image_size, size), steps)


def _gaussian(kernel: int, sigma: float) -> torch.Tensor:
    x = torch.arange(kernel, dtype=torch.float32) - (kernel - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def scaled_steps(side: int) -> list[str]:
    """DiG-IN's post-processing (erosion 3, dilation 20, blur 45 / 30 on 512 px) scaled to images of ``side`` px:
    each size times side / 512, rounded (a blur's kernel to an odd size); an erosion or dilation that rounds
    below 2 px does nothing and is left out. 32 px: ``blur_3_1.875``."""
    scale = side / PUBLISHED_SIDE
    steps = []
    for step in PUBLISHED_POSTPROCESS:
        kind, numbers = postprocess_step(step)
        if kind == "blur":
            steps.append(f"blur_{max(1, round(numbers[0] * scale)) | 1}_{numbers[1] * scale:g}")
        elif round(numbers[0] * scale) >= 2:
            steps.append(f"{kind}_{round(numbers[0] * scale)}")
    return steps


def postprocess_mask(mask: torch.Tensor, steps: Sequence[str]) -> torch.Tensor:
    """DiG-IN's mask post-processing: ``erosion_K``, ``dilation_K`` (K x K square), ``blur_K_SIGMA`` (Gaussian);
    ``published``: those of :func:`scaled_steps` for the mask's side."""
    m = mask.float()
    steps = [s for step in steps for s in (scaled_steps(mask.shape[-1]) if step == SCALED else [step])]
    for step in steps:
        kind, numbers = postprocess_step(step)
        if kind in ("erosion", "dilation"):
            k = int(numbers[0])
            padded = F.pad(m if kind == "dilation" else -m, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), "replicate")
            pooled = F.max_pool2d(padded, k, stride=1)
            m = pooled if kind == "dilation" else -pooled
        else:
            k = int(numbers[0]) | 1
            g = _gaussian(k, numbers[1])
            pad = k // 2
            m = F.conv2d(F.pad(m, (pad, pad, 0, 0), "replicate"), g.view(1, 1, 1, k))
            m = F.conv2d(F.pad(m, (0, 0, pad, pad), "replicate"), g.view(1, 1, k, 1))
    return m.clamp(0, 1)
