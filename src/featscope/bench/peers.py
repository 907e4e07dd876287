"""Peer methods as bench rows: pixel-space feature inversion (``bench decode``) and class-logit and neuron
visualisation (``bench visualize``) through lucent's and Horama's own public APIs.

Both come with the optional extra ``featscope[peers]`` (lucent installed apart with ``--no-deps``: its kornia pin
breaks diffusers). Each row optimises an image (lucent: a Fourier-parametrised,
colour-decorrelated image; Horama: MACO's phase under a fixed magnitude spectrum, or its Fourier method) so that
the network's feature matches the target's: the objective is minus the squared L2 feature distance, the same
distance the bench scores. Settings for 32 px world images were chosen on the tuning split (docs/evaluation.md).
For visualisation the same settings raise one unit instead (lucent's ``objectives.channel``; Horama's ``maco`` and
Feature Accentuation, ``accentuation``, which starts from a seed image and stays near it), at a step count the
caller sets.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.images import to_uint8
from featscope.investigate.common import fit_image
from featscope.losses import feature_loss

PACKAGES = {"lucent": "lucent", "maco": "horama", "fourier": "horama", "accentuation": "horama"}  # row -> module
INSTALL = {  # module -> how to install it
    "lucent": "pip install 'featscope[peers]' && pip install --no-deps torch-lucent==0.1.8",
    "horama": "pip install 'featscope[peers]'",
}
# Settings: the lowest median relative distance on 8 tuning images with shape-net, among learning rates and
# transformations at fast's budget (benchmarks/records/peers/tuning.jsonl, benchmarks/scripts/peer_tuning.py).
# lucent: 259 Adam steps on the whole batch (one network pass per image each), no jitter
LUCENT = {"steps": 259, "lr": 0.05, "jitter": 0}
# Horama (MACO, Fourier): 65 NAdam steps of 4 crops each (260 network passes per image)
HORAMA = {
    "maco": {"steps": 65, "crops": 4, "lr": 5.0, "box_size": (0.8, 0.9), "noise": 0.05},
    "fourier": {"steps": 65, "crops": 4, "lr": 1.0, "box_size": (0.8, 0.9), "noise": 0.05},
    # Feature Accentuation (decoding: from featscope's plain sample of the target's decode seed): tuned like the
    # others, on 8 tuning images (shape-net and color-net agree), its L2 penalty to the seed and the spectrum's
    # decay power at Horama's defaults (the penalty barely matters: 0.2500 against 0.2514 without it)
    "accentuation": {
        "steps": 65,
        "crops": 4,
        "lr": 5.0,
        "box_size": (0.8, 0.9),
        "noise": 0.05,
        "penalty": 1.0,
        "decay_power": 1.5,
    },
}
# Feature Accentuation in visualisation (bench visualize, from featscope's plain sample of the same seed), as
# measured there: Fourier's settings (it optimises a Fourier spectrum too) and Horama's defaults for its own knobs
ACCENTUATION_VISUALIZE = {**HORAMA["accentuation"], "lr": 1.0}
# Horama's own recolouring matrix (horama.common): MACO's spectrum lives in the colour space it undoes
COLOR_SQRT = np.array(
    [[0.56282854, 0.58447580, 0.58447580], [0.19482528, 0.0, -0.19482528], [0.04329450, -0.10823626, 0.06494176]]
)


def missing_note(row: str) -> str | None:
    """None when the row's package imports, else the one-line note that the row is skipped."""
    module = PACKAGES[row]
    try:
        importlib.import_module(module)
    except ImportError:
        return f"skipped row {row!r}: package {module!r} is not installed ({INSTALL[module]})"
    return None


def settings_of(row: str, settings: dict | None = None) -> dict:
    """The peer's settings (``settings``, else the decoding ones), as results.json records them."""
    if row == "lucent":
        return dict(settings or LUCENT)
    s = settings or HORAMA[row]
    return {**s, "box_size": list(s["box_size"])}


def lucent_invert(
    extractor: Extractor, targets: torch.Tensor, seed: int, settings: dict | None = None
) -> tuple[np.ndarray, int]:
    """Lucent's ``render_vis`` on a batch: one image per target feature, uint8; and network passes per image.
    ``settings`` default to ``LUCENT``."""
    from lucent.optvis import objectives

    model = nn.Sequential()
    model.add_module("features", extractor)
    targets = targets.to(extractor.mean.device)
    objective = objectives.Objective(lambda hook: feature_loss(hook("features"), targets).sum())
    s = settings or LUCENT
    images = lucent_render(model, objective, extractor_size(extractor), len(targets), seed, s)
    return images, s["steps"]


def lucent_render(
    model: nn.Module, objective, size: int, batch: int, seed: int, settings: dict, preprocess=None
) -> np.ndarray:
    """``render_vis`` of lucent's ``objective`` (over ``model``'s hooked modules) on a batch of Fourier-parametrised,
    colour-decorrelated images, ``settings`` (``LUCENT``'s keys); ``preprocess`` (a function of images in [0, 1])
    is the last of the transforms. uint8 (batch, size, size, 3)."""
    from lucent.optvis import param, render, transform

    s = settings
    transforms = [transform.jitter(s["jitter"])] if s["jitter"] else []
    if preprocess is not None:
        transforms.append(preprocess)
    torch.manual_seed(seed)
    hooks = {module: set(module._forward_hooks) for module in model.modules()}
    try:
        images = render.render_vis(
            model,
            objective,
            param_f=lambda: param.image(size, batch=batch),
            optimizer=lambda params: torch.optim.Adam(params, lr=s["lr"]),
            transforms=transforms,
            thresholds=(s["steps"],),
            preprocess=False,
            progress=False,
            show_image=False,
            fixed_image_size=size,
        )[-1]
    finally:  # lucent leaves its hooks (holding the last activations) on every module: take them off
        for module, before in hooks.items():
            for key in set(module._forward_hooks) - before:
                del module._forward_hooks[key]
    return to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2))


def lucent_visualize(
    network: nn.Module, preprocess, layer: str, channel: int, count: int, size: int, seed: int, settings: dict
) -> np.ndarray:
    """``count`` images (one batch, uint8) that raise ``channel`` of ``network``'s module ``layer`` (lucent's
    name: dots as underscores), each with lucent's own ``objectives.channel`` on its batch element."""
    from lucent.optvis import objectives

    objective = objectives.Objective.sum([objectives.channel(layer, channel, batch=i) for i in range(count)])
    return lucent_render(network, objective, size, count, seed, settings, preprocess)


def lucent_layer(network: nn.Module, layer: str, inputs: bool, size: int) -> str:
    """Lucent's name of the module whose output is ``layer``'s output, or with ``inputs`` its input (lucent hooks
    module outputs only): the first module in registration order whose output is that very tensor."""
    if not inputs:
        return layer.replace(".", "_")
    modules = dict(network.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, n=n: seen.setdefault(n, out))
               for n, m in modules.items() if n]  # fmt: skip
    handles.append(modules[layer].register_forward_hook(lambda mod, args, out: seen.setdefault(" input", args[0])))
    device = next(network.parameters()).device
    try:
        with torch.no_grad():
            network(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    found = [n for n in modules if n and n != layer and seen.get(n) is seen.get(" input")]
    if not found:
        raise FeatscopeError(f"no module's output is the input of {layer!r}, so lucent cannot hook it; name a layer")
    return found[0].replace(".", "_")


def horama_invert(
    method: str,
    extractor: Extractor,
    targets: torch.Tensor,
    seed: int,
    spectrum: np.ndarray,
    folder: Path,
    settings: dict | None = None,
    starts: torch.Tensor | None = None,
) -> tuple[np.ndarray, int]:
    """Horama's ``maco``, ``fourier`` or ``accentuation`` (from ``starts[i]``, (N, 3, H, W) in [0, 1]), one target
    at a time (target i from seed ``seed + i``), uint8; and network passes per image. MACO reads ``spectrum`` from
    ``folder/spectrum_decorrelated.npy``. ``settings`` default to ``HORAMA[method]``."""
    s = settings or HORAMA[method]
    size, device = extractor_size(extractor), extractor.mean.device
    images = []
    with spectrum_folder(folder, spectrum):
        for i, target in enumerate(targets.to(device)):

            def score(crops: torch.Tensor, t: torch.Tensor = target) -> torch.Tensor:
                return -feature_loss(extractor(crops), t.expand(len(crops), *t.shape)).mean()

            start = None if starts is None else fit_image(starts[i : i + 1], (size, size))[0]
            images.append(horama_run(method, score, seed + i, s, size, device, seed_image=start))
    return to_uint8(torch.stack(images)), s["steps"] * s["crops"]


def horama_run(
    method: str,
    score,
    seed: int,
    settings: dict,
    size: int,
    device: torch.device,
    seed_image: torch.Tensor | None = None,
) -> torch.Tensor:
    """One image (3, size, size) in [0, 1] from Horama's ``maco``, ``fourier`` or ``accentuation`` (from
    ``seed_image``, (3, size, size) in [0, 1]) raising ``score`` (a function of a batch of crops), under
    ``torch.manual_seed(seed)``. MACO reads its spectrum from the working folder (:func:`spectrum_folder`)."""
    import horama

    s = settings
    common = {"total_steps": s["steps"], "learning_rate": s["lr"], "image_size": size, "model_input_size": size,
              "noise": s["noise"], "values_range": (0.0, 1.0), "crops_per_iteration": s["crops"],
              "box_size": tuple(s["box_size"]), "device": str(device)}  # fmt: skip
    torch.manual_seed(seed)
    if method == "accentuation":
        if seed_image is None:
            raise FeatscopeError("Feature Accentuation starts from a seed image; none was given")
        extra = {"penalty": s["penalty"], "decay_power": s["decay_power"]}
        image, _ = horama.accentuation(score, seed_image.to(device).float(), **extra, **common)
    else:
        image, _ = (horama.maco if method == "maco" else horama.fourier)(score, **common)
    return image.detach().cpu()


@contextlib.contextmanager
def spectrum_folder(folder: Path, spectrum: np.ndarray) -> Iterator[None]:
    """Run inside ``folder`` with MACO's magnitude ``spectrum`` saved where Horama reads it, then return."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "spectrum_decorrelated.npy", spectrum.astype(np.float32))
    with working_folder(folder):
        yield


def maco_spectrum(images: np.ndarray) -> np.ndarray:
    """MACO's magnitude template from uint8 images (B, H, W, 3): the mean magnitude of the 2-D real FFT of each
    image in Horama's decorrelated colour space (each image standardised first), shape (3, H, W // 2 + 1)."""
    x = images.astype(np.float64) / 255
    x = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / (x.std(axis=(1, 2, 3), keepdims=True) + 1e-4)
    decorrelated = x @ np.linalg.inv(COLOR_SQRT)  # horama recolours by right-multiplying with COLOR_SQRT
    return np.abs(np.fft.rfft2(decorrelated.transpose(0, 3, 1, 2))).mean(axis=0)


def extractor_size(extractor: Extractor) -> int:
    """The image size the peers optimise: the network's input size, or the world's 32 px."""
    return extractor.input_size[0] if extractor.input_size is not None else 32


@contextlib.contextmanager
def working_folder(folder: Path) -> Iterator[None]:
    """Run inside ``folder`` (Horama reads MACO's spectrum from the working folder), then return."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
