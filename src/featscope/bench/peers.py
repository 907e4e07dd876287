"""Peer methods as bench rows: pixel-space feature inversion through lucent's and Horama's own public APIs.

Both come with the optional extra ``featscope[peers]`` (lucent installed apart with ``--no-deps``: its kornia pin
breaks diffusers). Each row optimises an image (lucent: a Fourier-parametrised,
colour-decorrelated image; Horama: MACO's phase under a fixed magnitude spectrum, or its Fourier method) so that
the network's feature matches the target's: the objective is minus the squared L2 feature distance, the same
distance the bench scores. Settings for 32 px world images were chosen on the tuning split (docs/evaluation.md).
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

from featscope.extractors.base import Extractor
from featscope.images import to_uint8
from featscope.losses import feature_loss

PACKAGES = {"lucent": "lucent", "maco": "horama", "fourier": "horama"}  # row -> the module it imports
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
}
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


def settings_of(row: str) -> dict:
    """The peer's settings, as results.json records them."""
    return dict(LUCENT) if row == "lucent" else {**HORAMA[row], "box_size": list(HORAMA[row]["box_size"])}


def lucent_invert(
    extractor: Extractor, targets: torch.Tensor, seed: int, settings: dict | None = None
) -> tuple[np.ndarray, int]:
    """Lucent's ``render_vis`` on a batch: one image per target feature, uint8; and network passes per image.
    ``settings`` default to ``LUCENT``."""
    from lucent.optvis import objectives, param, render, transform

    s = settings or LUCENT
    size = extractor_size(extractor)
    model = nn.Sequential()
    model.add_module("features", extractor)
    targets = targets.to(extractor.mean.device)
    objective = objectives.Objective(lambda hook: feature_loss(hook("features"), targets).sum())
    torch.manual_seed(seed)
    images = render.render_vis(
        model,
        objective,
        param_f=lambda: param.image(size, batch=len(targets)),
        optimizer=lambda params: torch.optim.Adam(params, lr=s["lr"]),
        transforms=[transform.jitter(s["jitter"])] if s["jitter"] else [],
        thresholds=(s["steps"],),
        preprocess=False,
        progress=False,
        show_image=False,
        fixed_image_size=size,
    )[-1]
    return to_uint8(torch.from_numpy(images).permute(0, 3, 1, 2)), s["steps"]


def horama_invert(
    method: str,
    extractor: Extractor,
    targets: torch.Tensor,
    seed: int,
    spectrum: np.ndarray,
    folder: Path,
    settings: dict | None = None,
) -> tuple[np.ndarray, int]:
    """Horama's ``maco`` or ``fourier``, one target at a time (target i from seed ``seed + i``), uint8; and
    network passes per image. MACO reads ``spectrum`` from ``folder/spectrum_decorrelated.npy``. ``settings``
    default to ``HORAMA[method]``."""
    import horama

    s = settings or HORAMA[method]
    size, device = extractor_size(extractor), extractor.mean.device
    run = horama.maco if method == "maco" else horama.fourier
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "spectrum_decorrelated.npy", spectrum.astype(np.float32))
    images = []
    with working_folder(folder):
        for i, target in enumerate(targets.to(device)):
            torch.manual_seed(seed + i)
            image, _ = run(
                lambda crops, t=target: -feature_loss(extractor(crops), t.expand(len(crops), *t.shape)).mean(),
                total_steps=s["steps"],
                learning_rate=s["lr"],
                image_size=size,
                model_input_size=size,
                noise=s["noise"],
                values_range=(0.0, 1.0),
                crops_per_iteration=s["crops"],
                box_size=s["box_size"],
                device=str(device),
            )
            images.append(image.detach())
    return to_uint8(torch.stack(images)), s["steps"] * s["crops"]


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
