"""Image files at the edges of the library: files <-> float tensors (B, 3, H, W) in [0, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from featscope.errors import InputFileError
from featscope.runs import atomic_write_bytes


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) float tensor in [0, 1] (any mode is converted to RGB)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"image file {str(path)!r} does not exist; check the path")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputFileError(
            f"cannot read image {str(path)!r} ({type(error).__name__}: {error}); give a valid PNG or JPEG file"
        ) from None
    return to_tensor(np.array(rgb))


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    if array.ndim == 3:
        array = array[None]
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float().div(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8 (clamped, rounded)."""
    return images.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def png_bytes(image: torch.Tensor | np.ndarray) -> bytes:
    """One image, (3, H, W) float in [0, 1] or (H, W, 3) uint8, encoded as PNG."""
    array = to_uint8(image[None])[0] if torch.is_tensor(image) else image
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_image(image: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write one image as PNG, atomically."""
    return atomic_write_bytes(path, png_bytes(image))


def image_grid(images: torch.Tensor, columns: int | None = None, scale: int = 1) -> np.ndarray:
    """Tile (B, 3, H, W) images into one (rows*H, cols*W, 3) uint8 array, optionally upscaled."""
    arrays = to_uint8(images)
    b, h, w, _ = arrays.shape
    columns = columns or b
    rows = -(-b // columns)
    grid = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = a
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid
