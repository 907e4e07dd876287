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


def pixel_noise(images: np.ndarray) -> np.ndarray:
    """Per image, the mean of |image - its 3x3 median filter| over pixels and channels (0-255 units).

    ``images`` is (B, H, W, 3) uint8. Flat regions and clean edges score near 0; pixel-level speckle
    (e.g. from optimising the image itself against a network) raises it.
    """
    values = images.astype(np.float32)
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return np.abs(values - np.median(windows, axis=(-2, -1))).mean(axis=(1, 2, 3))


def background_deviation(images: np.ndarray, object_distance: float = 60.0, margin: int = 2) -> np.ndarray:
    """Per image, the mean |pixel - background colour| (0-255) over the pixels away from the object.

    For images of one object on a flat background (the embedded world): the background colour is the
    median of the 2-pixel frame; pixels further than ``object_distance`` from it (RGB Euclidean) are the
    object, grown by ``margin`` pixels to leave out its anti-aliased edge. A rendered world image scores
    0; speckle and low-frequency blotches both raise it. NaN where no background pixel is left.
    """
    values = images.astype(np.float32)
    frame = np.concatenate(
        [
            values[:, :2].reshape(len(values), -1, 3),
            values[:, -2:].reshape(len(values), -1, 3),
            values[:, :, :2].reshape(len(values), -1, 3),
            values[:, :, -2:].reshape(len(values), -1, 3),
        ],
        axis=1,
    )
    background = np.median(frame, axis=1)[:, None, None, :]
    deviation = np.abs(values - background).mean(-1)
    near_object = np.linalg.norm(values - background, axis=-1) > object_distance
    for _ in range(margin):
        padded = np.pad(near_object, ((0, 0), (1, 1), (1, 1)))
        near_object = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2)).any(axis=(-2, -1))
    kept = (~near_object).sum((1, 2))
    with np.errstate(invalid="ignore"):
        return np.where(kept > 0, (deviation * ~near_object).sum((1, 2)) / kept, np.nan)


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
