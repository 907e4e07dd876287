"""Composable objectives for every solver: per-sample losses (lower is better) on generated images.

An objective maps a :class:`Context` (the images decoded from the x0 predictions, their latents, and
the start image, start latents and foreground mask when given) to a loss per sample (B,). Objectives
compose like lucent's: ``class_loss(net, "square") + 25 * latent_background_l2() - pixel_l1()``.

Networks are :class:`~featscope.extractors.Extractor` s (their differentiable preprocessing is used)
or plain modules on images in [0, 1]. Objectives that run a network apply the context's augmentation
(:class:`Cutouts`, set by the solver for the gradient pass) unless built with ``augment=False``; a
sample's loss is then the mean over its augmented views.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from featscope.errors import FeatscopeError, suggest
from featscope.extractors.base import Extractor
from featscope.extractors.hooks import layer_activation
from featscope.losses import feature_loss

Network = Extractor | nn.Module
Label = int | str


@dataclass
class Context:
    """What an objective sees: one evaluation of a batch of generated images."""

    images: torch.Tensor  # (B, 3, H, W) decoded x0 prediction in [0, 1]
    latents: torch.Tensor  # (B, C, h, w) x0 prediction (diffusion state)
    start_image: torch.Tensor | None = None  # (B|1, 3, H, W) in [0, 1]
    start_latents: torch.Tensor | None = None  # (B|1, C, h, w) encoding of the start image
    mask: torch.Tensor | None = None  # (B|1, 1, H', W') in [0, 1], 1 = foreground; resized where used
    augment: Cutouts | None = None  # augmentation of network inputs; None = plain forward
    generators: list[torch.Generator] | None = None  # one per sample, for the augmentation
    index: torch.Tensor | None = None  # (B,) the item each row works on (candidates share one); None = row i, item i


class Cutouts:
    """DiG-IN's augmentation: random square crops pooled to the network's input size, plus Gaussian noise.

    Crop side ``int(u ** cut_power * (max_size - min_size) + min_size)`` with u ~ U(0, 1), ``max_size`` the
    image's shorter side and ``min_size = min(max_size, input side)``, at a random offset, then
    ``adaptive_avg_pool2d`` to the input size and ``+ noise_sd * N(0, 1)``. An image no larger than the
    network's input is therefore only noised.
    """

    def __init__(self, num: int = 16, cut_power: float = 0.3, noise_sd: float = 0.005) -> None:
        self.num = num
        self.cut_power = cut_power
        self.noise_sd = noise_sd

    def __call__(
        self, images: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """(B, 3, H, W) -> (B * num, 3, *size), sample-major (views of sample i at i*num .. i*num + num - 1)."""
        side_y, side_x = images.shape[-2:]
        max_size = min(side_x, side_y)
        min_size = min(max_size, *size)
        views = []
        for i, image in enumerate(images):
            gen = generators[i] if generators is not None else None
            device = gen.device if gen is not None else images.device
            crops = []
            for _ in range(self.num):
                u = float(torch.rand((), generator=gen, device=device))
                side = int(u**self.cut_power * (max_size - min_size) + min_size)
                top = int(torch.randint(0, side_y - side + 1, (), generator=gen, device=device))
                left = int(torch.randint(0, side_x - side + 1, (), generator=gen, device=device))
                crops.append(F.adaptive_avg_pool2d(image[None, :, top : top + side, left : left + side], size))
            crops = torch.cat(crops)
            if self.noise_sd > 0:
                noise = torch.randn(crops.shape, generator=gen, device=device)
                crops = crops + self.noise_sd * noise.to(crops.device, crops.dtype)
            views.append(crops)
        return torch.cat(views)

    def __repr__(self) -> str:
        return f"Cutouts(num={self.num}, cut_power={self.cut_power}, noise_sd={self.noise_sd})"


# -- the objective algebra --------------------------------------------------------------------
class Objective:
    """A per-sample loss ``fn(ctx) -> (B,)`` with a readable ``name``; compose with ``+``, ``-``, ``*``, unary ``-``."""

    def __init__(self, fn: Callable[[Context], torch.Tensor], name: str, networks: tuple[Network, ...] = ()) -> None:
        self.fn = fn
        self.name = name
        self._networks = networks

    @property
    def networks(self) -> list[Network]:
        """The networks the objective runs (each once), e.g. to read a network's published guidance settings."""
        seen: dict[int, Network] = {}
        for _, leaf in self.terms:
            seen.update({id(net): net for net in leaf._networks})
        return list(seen.values())

    def __call__(self, ctx: Context) -> torch.Tensor:
        return self.fn(ctx)

    @property
    def terms(self) -> list[tuple[float, Objective]]:
        """The weighted leaf objectives this objective sums."""
        return [(1.0, self)]

    def evaluate(self, ctx: Context) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss (B,) and each leaf's unweighted loss by name."""
        parts = {leaf.name: leaf(ctx) for _, leaf in self.terms}
        return sum(w * parts[leaf.name] for w, leaf in self.terms), parts

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Sum(self.terms + other.terms)

    def __radd__(self, other: object) -> Objective:
        if isinstance(other, (int, float)) and other == 0:  # sum([a, b, ...]) starts from 0
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)):
            return NotImplemented
        return Sum([(float(weight) * w, leaf) for w, leaf in self.terms])

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return self * -1.0

    def __repr__(self) -> str:
        return f"Objective({self.name})"


class Sum(Objective):
    """A weighted sum of leaf objectives (the same leaf twice has its weights added)."""

    def __init__(self, terms: list[tuple[float, Objective]]) -> None:
        merged: dict[int, list] = {}
        for weight, leaf in terms:
            merged.setdefault(id(leaf), [0.0, leaf])[0] += weight
        names = [leaf.name for _, leaf in merged.values()]
        if len(set(names)) != len(names):
            raise FeatscopeError(f"two different objectives share a name in {names}; each term needs its own")
        self._terms = [(w, leaf) for w, leaf in merged.values()]
        super().__init__(self._total, _sum_name(self._terms))

    @property
    def terms(self) -> list[tuple[float, Objective]]:
        return list(self._terms)

    def _total(self, ctx: Context) -> torch.Tensor:
        return sum(w * leaf(ctx) for w, leaf in self._terms)


def _sum_name(terms: list[tuple[float, Objective]]) -> str:
    text = ""
    for i, (w, leaf) in enumerate(terms):
        sign = "-" if w < 0 else "+"
        body = leaf.name if abs(w) == 1 else f"{abs(w):g} * {leaf.name}"
        text += (("-" if w < 0 else "") + body) if i == 0 else f" {sign} {body}"
    return text


# -- running a network on the context's images ------------------------------------------------
def _net_name(net: Network) -> str:
    return net.name if isinstance(net, Extractor) else type(net).__name__


def _module(net: Network) -> nn.Module:
    return net.network if isinstance(net, Extractor) else net


def _views(net: Network, ctx: Context, augment: bool) -> tuple[torch.Tensor, int]:
    """The network's input images (B * n, 3, h, w) in [0, 1] and the number n of views per sample."""
    if not augment or ctx.augment is None or ctx.augment.num == 0:
        return ctx.images, 1
    size = net.input_size if isinstance(net, Extractor) and net.input_size is not None else ctx.images.shape[-2:]
    return ctx.augment(ctx.images, tuple(size), ctx.generators), ctx.augment.num


def run_network(net: Network, images: torch.Tensor) -> torch.Tensor:
    """The network's output (logits, embedding) on images in [0, 1], ignoring an Extractor's layer."""
    if isinstance(net, Extractor):
        return net.network(net.preprocess(images))
    return net(images)


def _per_sample(values: torch.Tensor, views: int) -> torch.Tensor:
    return values.view(-1, views).mean(1)


def class_index(net: Network, label: Label) -> int:
    if isinstance(label, int):
        return label
    labels = getattr(net, "labels", None)
    if not labels:
        raise FeatscopeError(f"{_net_name(net)} has no class names; give the class index instead of {label!r}")
    if label not in labels:
        raise FeatscopeError(f"{_net_name(net)} has no class {label!r}{suggest(label, labels)}; known: {labels}")
    return labels.index(label)


def _score(logits: torch.Tensor, y: int, kind: str) -> torch.Tensor:
    """What the objective raises for class y, per row: probability, log-probability or logit margin."""
    if not 0 <= y < logits.shape[1]:
        raise FeatscopeError(f"class index {y} is out of range for {logits.shape[1]} outputs")
    logits = logits.float()
    if kind == "conf":
        return logits.softmax(1)[:, y]
    if kind in ("ce", "log_conf"):
        return logits.log_softmax(1)[:, y]
    target = F.one_hot(torch.tensor(y, device=logits.device), logits.shape[1]).bool()
    return logits[:, y] - logits.masked_fill(target, float("-inf")).max(1).values  # margin over the NON-target logits


def _check_kind(kind: str, known: tuple[str, ...]) -> None:
    if kind not in known:
        raise FeatscopeError(f"unknown loss kind {kind!r}; use one of {', '.join(known)}")


# -- classifier objectives --------------------------------------------------------------------
def class_loss(net: Network, label: Label, kind: str = "ce", *, augment: bool = True) -> Objective:
    """Raise the network's class ``label``: ``ce``/``log_conf`` = -log p_y (the same value), ``conf`` = -p_y."""
    _check_kind(kind, ("ce", "conf", "log_conf"))
    y = class_index(net, label)

    def fn(ctx: Context) -> torch.Tensor:
        images, n = _views(net, ctx, augment)
        return _per_sample(-_score(run_network(net, images), y, kind), n)

    return Objective(fn, f"class_loss({_net_name(net)}, {label}, {kind})", (net,))


def classifier_difference(
    net1: Network, net2: Network, label: Label, kind: str = "conf", *, augment: bool = True
) -> Objective:
    """Raise ``label`` for ``net1`` and lower it for ``net2``: ``-s1 + s2`` with s the probability (``conf``),
    log-probability (``log_conf``) or logit margin z_y - max_{k != y} z_k (``logit_margin``)."""
    _check_kind(kind, ("conf", "log_conf", "logit_margin"))
    y1, y2 = class_index(net1, label), class_index(net2, label)

    def fn(ctx: Context) -> torch.Tensor:
        (images1, n), (images2, _) = _views(net1, ctx, augment), _views(net2, ctx, augment)  # own cutouts each
        first, second = run_network(net1, images1), run_network(net2, images2)
        return _per_sample(-_score(first, y1, kind) + _score(second, y2, kind), n)

    name = f"classifier_difference({_net_name(net1)}, {_net_name(net2)}, {label}, {kind})"
    return Objective(fn, name, (net1, net2))


# -- neurons ----------------------------------------------------------------------------------
def last_linear(module: nn.Module) -> str:
    """Name of the last ``nn.Linear`` in the module's registration order."""
    names = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise FeatscopeError(f"{type(module).__name__} has no linear layer; name the layer of the neuron")
    return names[-1]


def activation(module: nn.Module, x: torch.Tensor, layer: str, inputs: bool) -> torch.Tensor:
    """The output (or, with ``inputs``, the first input) of ``module.layer`` when the module runs on x."""
    value = layer_activation(module, x, layer, inputs=inputs)
    if value is None:
        raise FeatscopeError(f"layer {layer!r} does not run when images are encoded; pick another")
    return value


def pick_channel(values: torch.Tensor, channel: int) -> torch.Tensor:
    """One channel per sample: (B, C) as is, (B, C, H, W) averaged over space, (B, N, C) over tokens."""
    if values.dim() == 2:
        return values[:, channel]
    if values.dim() == 4:
        return values[:, channel].mean((1, 2))
    if values.dim() == 3:
        return values[:, :, channel].mean(1)
    raise FeatscopeError(f"cannot pick a channel from an activation of shape {tuple(values.shape)}")


def neuron(net: Network, layer: str | None, channel: int, maximise: bool = True, *, augment: bool = True) -> Objective:
    """Raise (or with ``maximise=False`` lower) one channel of ``layer``; ``layer=None`` is the input of the
    network's last linear layer (penultimate features), as DiG-IN's neuron visualisations use."""
    module = _module(net)
    inputs = layer is None
    name = last_linear(module) if inputs else layer
    known = [n for n, _ in module.named_modules() if n]
    if name not in known:
        raise FeatscopeError(f"{_net_name(net)} has no layer {name!r}{suggest(name, known)}")
    sign = -1.0 if maximise else 1.0

    def fn(ctx: Context) -> torch.Tensor:
        images, n = _views(net, ctx, augment)
        x = net.preprocess(images) if isinstance(net, Extractor) else images
        act = pick_channel(activation(module, x, name, inputs).float(), channel)
        return _per_sample(sign * act, n)

    where = f"input of {name}" if inputs else name
    return Objective(fn, f"{'' if maximise else 'neg_'}neuron({_net_name(net)}, {where}, {channel})", (net,))


# -- feature matching (feature decoding) -----------------------------------------------------
def feature_match(extractor: Extractor, target: torch.Tensor, loss: str = "l2", *, augment: bool = True) -> Objective:
    """Bring the extractor's features to ``target`` (N, ...): ``l2`` = squared Euclidean distance (the published
    loss), ``cosine`` = 1 - cos. Row i of the batch matches target row ``ctx.index[i]`` (row i without an
    index; a one-row target matches every row)."""
    _check_kind(loss, ("l2", "cosine"))
    cache: dict[torch.device, torch.Tensor] = {}

    def fn(ctx: Context) -> torch.Tensor:
        images, n = _views(extractor, ctx, augment)
        features = extractor(images).float()
        if features.device not in cache:
            cache[features.device] = target.to(features.device, torch.float32)
        wanted = cache[features.device]
        if ctx.index is not None:
            wanted = wanted[ctx.index.to(features.device)]
        if len(wanted) not in (1, len(ctx.images)):
            raise FeatscopeError(f"feature_match has {len(wanted)} target rows for a batch of {len(ctx.images)}")
        wanted = wanted.repeat_interleave(n, 0) if n > 1 and len(wanted) > 1 else wanted
        return _per_sample(feature_loss(features, wanted, loss), n)

    return Objective(fn, f"feature_match({extractor.name}, {loss})", (extractor,))


# -- CLIP text --------------------------------------------------------------------------------
def clip_text(net: Extractor, text: str, kind: str = "inner_product", *, augment: bool = True) -> Objective:
    """Pull the image embedding toward a text's embedding (both L2-normalised): ``inner_product`` = -cos,
    ``spherical_distance`` = 2 arcsin(||a - b|| / 2)^2."""
    _check_kind(kind, ("inner_product", "spherical_distance"))
    if not isinstance(net, Extractor) or not net.has_text:
        raise FeatscopeError(f"clip_text needs an extractor with a text tower (clip:RN50, ...), not {_net_name(net)}")
    cache: dict[torch.device, torch.Tensor] = {}

    def fn(ctx: Context) -> torch.Tensor:
        images, n = _views(net, ctx, augment)
        emb = F.normalize(run_network(net, images).float(), dim=-1)
        if emb.device not in cache:
            cache[emb.device] = F.normalize(net.encode_text([text]).float(), dim=-1).to(emb.device)
        target = cache[emb.device]
        if kind == "inner_product":
            values = -(emb * target).sum(-1)
        else:
            values = 2 * ((emb - target).norm(dim=-1) / 2).clamp(max=1).arcsin().pow(2)
        return _per_sample(values, n)

    return Objective(fn, f"clip_text({net.name}, {text!r}, {kind})", (net,))


# -- regularisers toward the start image -------------------------------------------------------
def _need(value: torch.Tensor | None, what: str, name: str) -> torch.Tensor:
    if value is None:
        raise FeatscopeError(f"{name} needs {what}")
    return value


def mask_at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A mask (H, W), (1|B, H, W) or (1|B, 1|3, H, W) as (1|B, 1, *size): area-averaged when shrinking (a
    latent cell's weight is the foreground fraction of its pixels), bilinear when growing."""
    m = mask.float()
    while m.dim() < 4:
        m = m.unsqueeze(0)
    m = m.mean(1, keepdim=True)
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    if m.shape[-2] >= size[0] and m.shape[-1] >= size[1]:
        return F.interpolate(m, size=tuple(size), mode="area")
    return F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)


def _masked_mean_sq(x: torch.Tensor, ref: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    diff = (x.float() - ref.float().to(x.device)).pow(2) * weight.to(x.device)
    return diff.flatten(1).mean(1)


def _masked_l2(space: str, region: str) -> Objective:
    name = f"{'px' if space == 'pixel' else 'latent'}_{region}_l2"

    def fn(ctx: Context) -> torch.Tensor:
        x = ctx.images if space == "pixel" else ctx.latents
        ref = ctx.start_image if space == "pixel" else ctx.start_latents
        ref = _need(ref, "a start image (or the first sample as reference)", name)
        m = mask_at(_need(ctx.mask, "a foreground mask", name), x.shape[-2:])
        return _masked_mean_sq(x, ref, m if region == "foreground" else 1 - m)

    return Objective(fn, name)


def latent_background_l2() -> Objective:
    """mean((1 - M) * (z0_hat - z_start)^2) over the latent (mask resized to the latent size)."""
    return _masked_l2("latent", "background")


def px_background_l2() -> Objective:
    """mean((1 - M) * (x0_hat - x_start)^2) over the image in [0, 1] (mask resized to the image size)."""
    return _masked_l2("pixel", "background")


def latent_foreground_l2() -> Objective:
    """mean(M * (z0_hat - z_start)^2) over the latent."""
    return _masked_l2("latent", "foreground")


def px_foreground_l2() -> Objective:
    """mean(M * (x0_hat - x_start)^2) over the image."""
    return _masked_l2("pixel", "foreground")


def pixel_l1() -> Objective:
    """mean |x0_hat - x_start| over the image in [0, 1]."""

    def fn(ctx: Context) -> torch.Tensor:
        ref = _need(ctx.start_image, "a start image (or the first sample as reference)", "pixel_l1")
        return (ctx.images.float() - ref.float().to(ctx.images.device)).abs().flatten(1).mean(1)

    return Objective(fn, "pixel_l1")


def pixel_l2() -> Objective:
    """mean (x0_hat - x_start)^2 over the image in [0, 1]."""

    def fn(ctx: Context) -> torch.Tensor:
        ref = _need(ctx.start_image, "a start image (or the first sample as reference)", "pixel_l2")
        return _masked_mean_sq(ctx.images, ref, torch.ones((), device=ctx.images.device))

    return Objective(fn, "pixel_l2")
