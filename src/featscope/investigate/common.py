"""What every investigation shares: the default backbone, start images, distances and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featscope.images import image_grid, load_image, save_image

DEFAULT_BACKBONE = "world:ddpm"
FLIP = 0.5  # a counterfactual flipped when the classifier gives the target class a probability above this


# -- images ----------------------------------------------------------------------------------------
def fit_image(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """(B, C, H, W) -> centre crop to the aspect of ``size``, then resized to ``size`` (DiG-IN: Resize + CenterCrop)."""
    h, w = image.shape[-2:]
    th, tw = size
    if h * tw > w * th:  # too tall
        ch = round(w * th / tw)
        top = (h - ch) // 2
        image = image[..., top : top + ch, :]
    elif h * tw < w * th:
        cw = round(h * tw / th)
        left = (w - cw) // 2
        image = image[..., left : left + cw]
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    antialias = mode in ("bilinear", "bicubic")
    extra = {"antialias": True} if antialias else {}
    return F.interpolate(image, size=tuple(size), mode=mode, **extra).clamp(0, 1)


def load_start_image(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A real image as (1, 3, *size) in [0, 1]."""
    return fit_image(load_image(path), size)


def distances(images: torch.Tensor, start: torch.Tensor) -> dict[str, list[float]]:
    """Per image, mean L1 and L2 (root mean square) distance in [0, 1] pixels to the start image."""
    diff = images.float() - start.float()
    return {
        "l1": diff.abs().flatten(1).mean(1).tolist(),
        "l2": diff.pow(2).flatten(1).mean(1).sqrt().tolist(),
    }


def save_strip(images: torch.Tensor, captions: list[list[str]], path: Path, best: int | None = None) -> None:
    """All iterates (N, 3, H, W) in one row, each upscaled and captioned below (the best one framed)."""
    from PIL import Image, ImageDraw, ImageFont

    scale = max(1, 128 // images.shape[-1])
    cells = image_grid(images, columns=len(images), scale=scale)
    h, w = images.shape[-2] * scale, images.shape[-1] * scale
    font = ImageFont.load_default()
    lines = max((len(c) for c in captions), default=0) + 1
    cell_w = max(w, 150)
    canvas = Image.new("RGB", (cell_w * len(images), h + 12 * lines + 6), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(len(images)):
        x = i * cell_w
        canvas.paste(Image.fromarray(cells[:, i * w : (i + 1) * w]), (x, 0))
        if best is not None and i == best:
            draw.rectangle([x, 0, x + w - 1, h - 1], outline=(220, 0, 0), width=3)
        text = [f"iteration {i}" + (" (best)" if i == best else "")] + list(captions[i] if i < len(captions) else [])
        for j, line in enumerate(text):
            draw.text((x + 2, h + 3 + 12 * j), line, fill="black", font=font)
    buffer = np.asarray(canvas)
    save_image(buffer, path)


def save_loss_plot(terms: dict[str, list[float]], path: Path, title: str = "") -> None:
    """One curve per loss term (and the total) over the iterations."""
    import io

    from matplotlib.figure import Figure

    from featscope.runs import atomic_write_bytes

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for name, values in terms.items():
        ax.plot(range(len(values)), values, marker="o", label=name[:60])
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (not augmented)")
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=7)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
