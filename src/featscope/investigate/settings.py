"""The options of each investigation: one frozen dataclass of knobs per method (see :mod:`featscope.settings`).

Every knob is declared once, here (or, for the inversion's, in :mod:`featscope.solvers.configs`); the command
line (``featscope investigate KIND``, ``featscope invert``), the keys of a study's job entries and the keyword
arguments of :mod:`featscope.investigate` are derived from these dataclasses, and each item's ``config.yaml``
records them under ``settings`` with the solver's. The parts several methods share are dataclasses of their own
(:class:`CaptionSettings`, :class:`BackgroundSettings`, ...), which the methods' settings inherit.

Light on purpose: no torch, so that ``--help`` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from featscope.errors import FeatscopeError, invalid_choice
from featscope.settings import Settings, comma_separated, knob, knob_of
from featscope.solvers.configs import InnerSteps, NullTextConfig

PUBLISHED_REGULARIZERS = ("latent_background_l2", "px_background_l2")
PUBLISHED_WEIGHTS = (25.0, 250.0)  # DiG-IN's UVCE command line
DIG_IN_TAUS = (0.3, 0.4, 0.5)  # a counterfactual's word-swap start: re-injection for 6, 8 or 10 of 20 steps
DIG_IN_BLENDS = (0.0, 0.3)  # and the source's background latents blended in for the first 30% of the steps, or not
DIG_IN_NEURON_TAU = 0.3  # a neuron counterfactual's start: its caption's own cross-attention re-injected for 30%
DIG_IN_NEURON_BLEND = 0.3  # and the source's foreground latents blended in for the first 30% of the steps
DIG_IN_CAPTION_PREFIX = "an image of a {label}"  # DiG-IN's prompt of its captioning model
NO_PREFIX = "none"


# -- the mask knob's values ------------------------------------------------------------------------
CROSS_ATTENTION = "cross-attention"
DEFAULT_THRESHOLD = 0.3
NO_MASK = "none"
PUBLISHED_MASK = CROSS_ATTENTION  # a foreground mask by default, as DiG-IN always masks
MASK_KINDS = "a PNG file, 'cross-attention[:THRESHOLD|:otsu]' or 'sam:FOLDER_OR_ID'"


@dataclass(frozen=True)
class MaskSpec:
    """A generated mask: ``kind`` 'cross-attention' or 'sam' (SAM model ``source``), thresholded at ``threshold``."""

    kind: str
    threshold: float | str = DEFAULT_THRESHOLD
    source: str | None = None


def parse_mask(text: str | Path | None) -> MaskSpec | None:
    """``cross-attention``, ``cross-attention:0.4``, ``cross-attention:otsu`` or ``sam:PATH``; None for a PNG path."""
    if text is None or isinstance(text, Path):
        return None
    if text.startswith("sam:"):
        if not text[4:]:
            raise FeatscopeError("--mask sam: needs a SAM model, e.g. sam:models/sam-vit-base (a local folder)")
        return MaskSpec("sam", source=text[4:])
    kind, _, option = text.partition(":")
    if kind != CROSS_ATTENTION:
        return None
    if option in ("", "otsu"):
        return MaskSpec(kind, option or DEFAULT_THRESHOLD)
    try:
        value = float(option)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise FeatscopeError(f"mask {text!r}: the threshold must be a number in (0, 1) or 'otsu'")
    return MaskSpec(kind, value)


PUBLISHED_POSTPROCESS = ("erosion_3", "dilation_20", "blur_45_30")  # DiG-IN's, on 512 px Stable Diffusion images
PUBLISHED_SIDE = 512
SCALED = "published"  # the published steps scaled to the image's side


def postprocess_step(step: str) -> tuple[str, list[float]]:
    """One step of DiG-IN's mask post-processing, ``erosion_K``, ``dilation_K`` (K >= 1) or ``blur_K_SIGMA``
    (K >= 1, SIGMA > 0), as (kind, numbers); ``published`` (the published steps scaled to the image) is
    ``("published", [])``."""
    if step == SCALED:
        return SCALED, []
    kind, *args = step.split("_")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        numbers = []
    square = kind in ("erosion", "dilation") and len(numbers) == 1 and numbers[0] >= 1
    blur = kind == "blur" and len(numbers) == 2 and numbers[0] >= 1 and numbers[1] > 0
    if not (square or blur):
        raise FeatscopeError(
            f"unknown mask post-processing step {step!r}; use erosion_K, dilation_K, blur_K_SIGMA (blur_45_30) or "
            "published"
        )
    return kind, numbers


def _direction(text: str) -> bool:
    """``--direction up`` raises the channel (maximise), ``down`` lowers it."""
    return text == "up"


# -- the shared parts ------------------------------------------------------------------------------
class MethodSettings(Settings):
    """Mixin of the investigations' settings: a list knob also takes its command-line text (``"a,b"``) or any
    sequence (kept as a tuple), a path knob a path (kept as text); ``validate`` checks every knob's choices."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("tuple[") and isinstance(value, str) and knob_of(f).parse is not None:
                object.__setattr__(self, f.name, knob_of(f).parse(value))
            elif str(f.type).startswith("tuple[") and isinstance(value, (list, tuple)):
                item = {"float": float, "int": int, "str": str}[str(f.type)[6:].split(",")[0]]
                object.__setattr__(self, f.name, tuple(item(v) for v in value))
            elif isinstance(value, os.PathLike):
                object.__setattr__(self, f.name, os.fspath(value))

    def validate(self) -> None:
        super().validate()
        for f in fields(self):
            k, value = knob_of(f), getattr(self, f.name)
            if k.choices is not None and k.parse is None and value not in k.choices:
                raise FeatscopeError(f"{f.name}: {invalid_choice(value, k.choices)}")


@dataclass(frozen=True)
class PromptSettings(MethodSettings):
    prompt: str | None = knob(None, "caption of every real image ({label} = its class; default: IMAGE.txt or the "
                              "records.jsonl beside it, --caption-model, then the template); neuron without "
                              "--images: the prompt of the plain samples (default: DiG-IN's, the template with the "
                              "best of --prompt-words; '' for none)", metavar="TEXT")  # fmt: skip


@dataclass(frozen=True)
class TemplateSettings(MethodSettings):
    prompt_template: str | None = knob(None, "prompt from the class name, with {label} (default: '{label}' on the "
                                       "world, 'a photograph of a {label}' else)", metavar="TEXT")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.prompt_template is not None and "{label}" not in self.prompt_template:
            raise FeatscopeError(
                f"prompt template {self.prompt_template!r} has no {{label}}; e.g. 'a photo of a {{label}}'"
            )


@dataclass(frozen=True)
class CaptionSettings(TemplateSettings, PromptSettings):
    """How a real image gets its caption: ``prompt``, else ``IMAGE.txt`` (or its line in ``records.jsonl``), else
    the ``caption_model``'s caption, else ``prompt_template`` with its class name."""

    caption_model: str | None = knob(None, "caption each image with this image-to-text model (e.g. BLIP): a folder "
                                     "saved with save_pretrained, or a hub id from the local cache; used when there "
                                     "is no --prompt and no IMAGE.txt", metavar="SPEC")  # fmt: skip
    caption_prefix: str = knob(DIG_IN_CAPTION_PREFIX, "the text the --caption-model's caption continues, with "
                               "{label} (DiG-IN's, so that the class word is in the caption); none: no prompt",
                               metavar="TEXT")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.caption_prefix != NO_PREFIX and "{label}" not in self.caption_prefix:
            raise FeatscopeError(f"caption prefix {self.caption_prefix!r} has no {{label}}; e.g. 'an image of a "
                                 "{label}', or none")  # fmt: skip


@dataclass(frozen=True)
class DirectionSettings(MethodSettings):
    maximise: bool = knob(True, "raise (up) or lower (down) the channel; --minimise is --direction down",
                          flag="--direction", choices=("up", "down"), parse=_direction)  # fmt: skip


MASK_HELP = (
    "foreground mask: a PNG (white = object, the image's size), cross-attention[:T|:otsu] (the "
    "start class word's (neuron: --object-word's) cross-attention scaled to [0, 1], cut at T, default 0.3) or sam:DIR "
    "(a local SAM/SAM-HQ folder, prompted with that map's box and peak); none: the whole image is background. "
    "Default: counterfactual the backbone's (world:ddpm cross-attention:otsu; others none), neuron --images none"
)


@dataclass(frozen=True)
class BackgroundSettings(InnerSteps, MethodSettings):
    """What keeps a real image's background while it is optimised from its inversion: the regularisers, their
    weights, the foreground mask and its post-processing (and the inversion's inner steps)."""

    regularizers: tuple[str, ...] = knob(PUBLISHED_REGULARIZERS, "keep the background: penalties outside the mask, "
                                         "each weighted (DiG-IN's by default)", metavar="NAME,NAME",
                                         parse=comma_separated(str))  # fmt: skip
    regularizer_weights: tuple[float, ...] = knob(PUBLISHED_WEIGHTS, "weight of each regularizer, in order",
                                                  metavar="W,W",
                                                  parse=comma_separated(float))  # fmt: skip
    mask: str | None = knob(None, MASK_HELP, metavar="PNG|cross-attention[:T|:otsu]|sam:DIR|none")
    mask_postprocess: tuple[str, ...] | None = knob(None, "post-processing of the mask, in order: erosion_K, "
                                                    "dilation_K, blur_K_SIGMA, e.g. erosion_3,dilation_20,blur_45_30 "
                                                    "(DiG-IN's on 512 px images), or published: those scaled to the "
                                                    "image's side; none: no post-processing (default: the backbone "
                                                    "family's: world:ddpm none, others published)",
                                                    metavar="STEPS",
                                             parse=comma_separated(str))  # fmt: skip

    def validate(self) -> None:
        super().validate()
        regularizers, weights = len(self.regularizers), len(self.regularizer_weights)
        if regularizers != weights:
            raise FeatscopeError(f"{regularizers} regularizers but {weights} weights; give one weight each")
        parse_mask(self.mask)  # a bad threshold or an empty sam: fails here
        for step in self.mask_postprocess or ():
            if step != NO_MASK:
                postprocess_step(step)


# -- one per method ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DifferenceSettings(TemplateSettings):
    """Options of :func:`featscope.investigate.difference` (``investigate difference``)."""

    samples_per_class: int = knob(1, "images per class", metavar="N")
    loss: str = knob("conf", "score s of the class, raised for net1 and lowered for net2: probability, "
                     "log-probability or logit margin", choices=("conf", "log_conf", "logit_margin"))  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.samples_per_class < 1:
            raise FeatscopeError("samples_per_class must be at least 1")


@dataclass(frozen=True)
class NeuronSettings(DirectionSettings, TemplateSettings, PromptSettings):
    """Options of :func:`featscope.investigate.neuron` (``investigate neuron`` without ``--images``)."""

    prompt_words: tuple[str, ...] = knob((), "candidate words of the neuron's prompt when no --prompt is given: "
                                         "the word whose plain samples raise (lower) the channel most is put in "
                                         "the template (default: the network's classes, at most 5: those its last "
                                         "layer weights the channel most)", metavar="WORD,WORD",
                                         parse=comma_separated(str))  # fmt: skip
    prompt_probes: int = knob(4, "plain samples per candidate word when the prompt is chosen", metavar="N")

    samples: int = knob(1, "samples per channel", metavar="N")
    images_folder: str | None = knob(None, "dataset folder ROOT/<class>/: also save its top-k images per channel",
                                     metavar="DIR")  # fmt: skip
    top_k: int = knob(8, "top images per channel from --images-folder", metavar="K")
    namer: str | None = knob(None, "name each channel by the captions of its top-k images from a local "
                             "image-to-text model (e.g. BLIP); default: their most frequent class",
                             metavar="vlm:DIR")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if self.samples < 1 or self.top_k < 1 or self.prompt_probes < 1:
            raise FeatscopeError("samples, top_k and prompt_probes must be at least 1")
        if self.namer is not None and (not self.namer.startswith("vlm:") or self.images_folder is None):
            raise FeatscopeError(f"namer {self.namer!r}: use vlm:FOLDER (an image-to-text model) with an images folder")


@dataclass(frozen=True)
class NeuronImagesSettings(BackgroundSettings, DirectionSettings, CaptionSettings):
    """Options of :func:`featscope.investigate.neuron_images` (``investigate neuron --images``)."""

    reinject: bool = knob(False, "DiG-IN's start: every iteration re-injects the caption's own cross-attention of "
                          "the image's regeneration for --start-tau of the steps and holds the object (inside the "
                          "--mask) to that regeneration for --start-blend; else only the regularisers hold the "
                          "image")  # fmt: skip
    start_tau: float = knob(DIG_IN_NEURON_TAU, "--reinject: share of the steps with the caption's cross-attention "
                            "re-injected", metavar="T")  # fmt: skip
    start_blend: float = knob(DIG_IN_NEURON_BLEND, "--reinject: share of the steps with the object (inside the "
                              "mask) blended from the image's regeneration (0: none; needs a mask)",
                              metavar="B")  # fmt: skip
    object_word: str | None = knob(None, "the caption's word for the image's object, whose cross-attention makes a "
                                   "generated --mask (default: the image's class name)", metavar="WORD")  # fmt: skip

    def validate(self) -> None:
        super().validate()
        if not (0 <= self.start_tau <= 1 and 0 <= self.start_blend <= 1):
            raise FeatscopeError("start_tau and start_blend are shares of the steps, in [0, 1]")


@dataclass(frozen=True)
class CounterfactualSettings(BackgroundSettings, CaptionSettings):
    """Options of :func:`featscope.investigate.counterfactual` (``investigate counterfactual``)."""

    loss: str = knob("ce", "raise the target class: -log p (ce, log_conf: the same value) or -p (conf)",
                     choices=("ce", "conf", "log_conf"))  # fmt: skip
    start_from: str = knob("word-swap", "where the optimisation starts: DiG-IN's best word swap (the start class "
                           "word replaced by the target's, cross-attention re-injected for --start-taus of the steps, "
                           "the background blended for --start-blends; the pair with the lowest loss kept; the caption "
                           "must name the start class), or the inversion's reconstruction",
                           choices=("word-swap", "reconstruction"))  # fmt: skip
    start_taus: tuple[float, ...] = knob(DIG_IN_TAUS, "word-swap start: shares of the steps with the source's "
                                         "cross-attention re-injected", metavar="T,T",
                                         parse=comma_separated(float))  # fmt: skip
    start_blends: tuple[float, ...] = knob(DIG_IN_BLENDS, "word-swap start: shares of the steps with the source's "
                                           "latents blended in outside the mask (0: none; needs a mask)",
                                           metavar="B,B", parse=comma_separated(float))  # fmt: skip

    def validate(self) -> None:
        super().validate()
        shares = (*self.start_taus, *self.start_blends)
        if not self.start_taus or not self.start_blends or not all(0 <= x <= 1 for x in shares):
            raise FeatscopeError("start_taus and start_blends take shares of the steps in [0, 1], at least one each")


@dataclass(frozen=True)
class WordSwapSettings(CaptionSettings):
    """Options of :func:`featscope.investigate.word_swap` (``investigate word-swap``); the inversion's and the
    search's are :class:`~featscope.solvers.configs.WordSwapConfig`."""

    word: str | None = knob(None, "the word to replace in the caption (default: the start class name)",
                            metavar="WORD")  # fmt: skip
    new_word: str | None = knob(None, "the word to put in its place (default: the target class name)",
                                metavar="WORD")  # fmt: skip


@dataclass(frozen=True)
class InvertSettings(NullTextConfig, CaptionSettings):
    """Options of :func:`featscope.investigate.invert` (``featscope invert``): the captions and the inversion."""
