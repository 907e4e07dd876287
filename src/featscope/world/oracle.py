"""An analytic oracle for the shapes world: read an image's five attributes back, no learning.

Background: the median border colour, snapped to the nearest background palette colour.
Object: the largest connected component of (lightly smoothed) pixels far from the background.
Colour: the median of the object's high-contrast core, snapped to the palette. Each pixel is then
read as a mix of background and object colour; that soft coverage (alpha) is matched against
rendered templates of every shape, size and rotation, aligned on the centroid: the best soft IoU
gives the shape, the coverage area the size, and the centroid (corrected by the template's own
centroid offset) the grid position. Images without one clear object (nothing, several objects,
off-palette or mixed colours, no recognisable shape) are marked invalid, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage

from featscope.world.render import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLORS,
    COLS,
    IMAGE_SIZE,
    ROWS,
    SHAPES,
    SIZES,
    SUPERSAMPLE,
    shape_polygon,
)

# Distances are Euclidean in RGB, 0..255 units.
OBJECT_DISTANCE = 40.0  # a pixel this far from the background belongs to the object
MAX_BACKGROUND_DISTANCE = 70.0  # border colour further than this from every background: invalid
MAX_COLOR_DISTANCE = 80.0  # object colour further than this from every palette colour: invalid
MIN_AREA = 15  # object pixels, fewer: no object
MAX_AREA = 420  # object pixels, more: no object (world objects: 48..321 px, the mask is a little fat)
SECOND_OBJECT_AREA = 10  # a second component this large (and >= 20% of the first): several objects
MAX_BORDER_FRACTION = 0.35  # share of border pixels covered by the object, more: invalid (world images: <= 0.16)
MAX_COLOR_SPREAD = 0.25  # share of object pixels far from every background/colour mix, more: mixed colours
MIN_SHAPE_IOU = 0.8  # best template IoU lower than this: no recognisable shape (a wrong shape reaches ~0.9)

WINDOW = 25  # template window side, centred on the object's centroid
HALF = WINDOW // 2
OFFSET_BINS = 4  # sub-pixel centroid offsets per axis, templates are rendered for each
ANGLES = np.arange(-20.0, 20.01, 2.5)  # the generator's +-15 degrees with a margin

_BG_NAMES = tuple(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[k] for k in _BG_NAMES], np.float32)
_COLOR_NAMES = tuple(COLORS)
_COLOR_RGB = np.array([COLORS[k] for k in _COLOR_NAMES], np.float32)
_SIZE_NAMES = tuple(SIZES)
_ROW_NAMES, _COL_NAMES = tuple(ROWS), tuple(COLS)
_ROW_Y = np.array([ROWS[k] for k in _ROW_NAMES], np.float32)
_COL_X = np.array([COLS[k] for k in _COL_NAMES], np.float32)
_PLANE = np.zeros((3, 3, 3), bool)
_PLANE[1] = True  # 8-connectivity within each image, none across the batch


@dataclass(frozen=True)
class OracleReading:
    """The oracle's reading of one image; attributes are None when it is not valid."""

    valid: bool
    reason: str = ""
    shape: str | None = None
    color: str | None = None
    size: str | None = None
    position: str | None = None
    background: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # shape_iou, shape_margin, color/background distance

    def attributes(self) -> dict[str, str | None]:
        """The five categorical attributes."""
        return {name: getattr(self, name) for name in ATTRIBUTES}


@dataclass(frozen=True)
class _Templates:
    """Soft coverage masks for every (sub-pixel offset, shape, size, angle), flattened."""

    masks: np.ndarray  # (OFFSET_BINS**2, K, WINDOW*WINDOW) float32
    norms: np.ndarray  # (OFFSET_BINS**2, K) squared L2 norms
    shape: np.ndarray  # (K,) index into SHAPES
    offset: np.ndarray  # (K, 2) centroid minus polygon centre (x, y), pixels
    area_threshold: np.ndarray  # (len(SHAPES),) coverage area between small and large


def _rasterise(shape: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Soft coverage of a shape in the template window, drawn like ``render.render``."""
    big = WINDOW * SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    s = SUPERSAMPLE
    ImageDraw.Draw(image).polygon(shape_polygon(shape, cx * s, cy * s, radius * s, angle), fill=255)
    return np.asarray(image.resize((WINDOW, WINDOW), Image.Resampling.BOX), np.float32) / 255.0


def _centroid(alpha: np.ndarray) -> np.ndarray:
    """(x, y) centroid of a soft mask, in pixel index coordinates."""
    ys, xs = np.indices(alpha.shape)
    return np.array([(alpha * xs).sum(), (alpha * ys).sum()]) / alpha.sum()


def _bin_centres() -> np.ndarray:
    """Centres of the sub-pixel offset bins, in [-0.5, 0.5)."""
    return (np.arange(OFFSET_BINS) + 0.5) / OFFSET_BINS - 0.5


@lru_cache(maxsize=1)
def _templates() -> _Templates:
    """Render the template bank once: each template's centroid sits at a bin's sub-pixel offset."""
    keys = [(name, zi, SIZES[z], a) for name in SHAPES for zi, z in enumerate(_SIZE_NAMES) for a in ANGLES]
    offsets = np.array([_centroid(_rasterise(name, HALF, HALF, r, a)) - HALF for name, _, r, a in keys])

    def shifted(fx: float, fy: float) -> np.ndarray:
        return np.stack(
            [
                _rasterise(name, HALF + fx - d[0], HALF + fy - d[1], r, a).ravel()
                for (name, _, r, a), d in zip(keys, offsets, strict=True)
            ]
        )

    masks = np.stack([shifted(fx, fy) for fy in _bin_centres() for fx in _bin_centres()])
    shape, size = np.array([SHAPES.index(k[0]) for k in keys]), np.array([k[1] for k in keys])
    area = masks.sum(-1).mean(0)
    small, large = ([area[(shape == si) & (size == zi)].mean() for si in range(len(SHAPES))] for zi in (0, 1))
    threshold = np.sqrt(np.array(small) * np.array(large))
    return _Templates(masks, (masks**2).sum(-1), shape, offsets.astype(np.float32), threshold)


def _to_nhwc255(images, size: int = IMAGE_SIZE) -> np.ndarray:
    """Any accepted image batch as (B, size, size, 3) float32 in 0..255."""
    if isinstance(images, torch.Tensor):
        is_uint8 = images.dtype == torch.uint8
        array = images.detach().cpu().float().numpy()
    else:
        is_uint8 = np.asarray(images).dtype == np.uint8
        array = np.asarray(images, np.float32)
    if array.ndim != 4 or 3 not in (array.shape[1], array.shape[3]):
        raise ValueError(f"expected a (B,3,H,W) or (B,H,W,3) image batch, got shape {tuple(array.shape)}")
    if array.shape[1] == 3 and array.shape[3] != 3:
        array = array.transpose(0, 2, 3, 1)
    if not is_uint8:
        array = np.clip(array, 0.0, 1.0) * 255.0
    if array.shape[1:3] != (size, size):
        nchw = torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))
        array = F.interpolate(nchw, size=(size, size), mode="area").numpy().transpose(0, 2, 3, 1)
    return np.ascontiguousarray(array, np.float32)


def _nearest(colours: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour and the distance to it, per row."""
    distance = np.linalg.norm(colours[:, None, :] - palette[None], axis=-1)
    return distance.argmin(1), distance.min(1)


def _border(x: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, (B, P, ...)."""
    return np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the largest component's mask and the second largest component's area."""
    labels, count = ndimage.label(mask, structure=_PLANE)
    largest, second = np.zeros(len(mask), np.int64), np.zeros(len(mask), np.int64)
    if count:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        image_of = np.zeros(count + 1, np.int64)
        image_of[labels.reshape(len(mask), -1)] = np.arange(len(mask))[:, None]
        order = 1 + np.lexsort((-sizes[1:], image_of[1:]))  # by image, then largest first
        first = np.r_[True, image_of[order][1:] != image_of[order][:-1]]
        is_second = np.r_[False, ~first[1:] & first[:-1]]
        largest[image_of[order[first]]] = order[first]
        second[image_of[order[is_second]]] = sizes[order[is_second]]
    return (labels == largest[:, None, None]) & (largest[:, None, None] > 0), second


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image, the median of ``values`` (B, H, W[, C]) over ``mask`` (B, H, W); zero where the mask is empty."""
    pixels = IMAGE_SIZE**2
    flat = values.reshape(len(values), pixels, int(np.prod(values.shape[3:])))
    keep = mask.reshape(len(mask), pixels)
    ordered = np.sort(np.where(keep[..., None], flat, np.inf), axis=1)  # masked-out values last
    count = keep.sum(1)
    low, high = np.maximum(count - 1, 0) // 2, count // 2
    batch = np.arange(len(values))
    median = (ordered[batch, low] + ordered[batch, np.minimum(high, pixels - 1)]) / 2
    return np.where(count[:, None] > 0, median, 0.0).reshape(values.shape[:1] + values.shape[3:])


def _core(distance: np.ndarray, component: np.ndarray) -> np.ndarray:
    """The component's pixels of at least median contrast: its core, free of antialiased edges."""
    return component & (distance >= _masked_median(distance, component)[:, None, None])


def _mixture(x: np.ndarray, bg: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel as a mix of background and object colour: the mix (alpha) and the RGB residual."""
    direction = colour - bg
    offset = x - bg[:, None, None]
    t = (offset * direction[:, None, None]).sum(-1) / np.maximum((direction**2).sum(-1), 1.0)[:, None, None]
    residual = np.linalg.norm(offset - t[..., None] * direction[:, None, None], axis=-1)
    return np.clip(t, 0.0, 1.0), residual


def _windows(alpha: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """WINDOW x WINDOW crops of alpha around each rounded centroid (x, y), flattened."""
    padded = np.pad(alpha, ((0, 0), (HALF, HALF), (HALF, HALF)))
    x0, y0 = np.rint(centre).astype(np.int64).T
    steps = np.arange(WINDOW)
    batch = np.arange(len(alpha))[:, None, None]
    return padded[batch, (y0[:, None] + steps)[:, :, None], (x0[:, None] + steps)[:, None, :]].reshape(
        len(alpha), WINDOW**2
    )


def _match(windows: np.ndarray, centre: np.ndarray, bank: _Templates) -> np.ndarray:
    """Soft IoU (Tanimoto: a.b / (|a|^2 + |b|^2 - a.b)) against the templates of each window's offset bin."""
    frac = centre - np.rint(centre)
    bins = np.clip(np.floor((frac + 0.5) * OFFSET_BINS), 0, OFFSET_BINS - 1).astype(np.int64)
    group = bins[:, 1] * OFFSET_BINS + bins[:, 0]
    iou = np.zeros((len(windows), bank.masks.shape[1]), np.float32)
    for g in np.unique(group):
        rows = group == g
        inter = windows[rows] @ bank.masks[g].T
        union = (windows[rows] ** 2).sum(1, keepdims=True) + bank.norms[g][None] - inter
        iou[rows] = inter / np.maximum(union, 1e-6)
    return iou


def _segment(x: np.ndarray) -> dict[str, np.ndarray]:
    """Background (measured and snapped to the palette) and the object's connected component."""
    bg = np.median(_border(x), axis=1)
    bg_index, bg_dist = _nearest(bg, _BG_RGB)
    smooth = ndimage.uniform_filter(x, size=(1, 3, 3, 1), mode="nearest")  # tames pixel noise
    component, second = _components(np.linalg.norm(smooth - bg[:, None, None], axis=-1) > OBJECT_DISTANCE)
    area = component.sum((1, 2))
    border = _border(component).mean(1)
    return dict(bg=bg, bg_index=bg_index, bg_dist=bg_dist, component=component, area=area, second=second, border=border)


def _colour(x: np.ndarray, bg: np.ndarray, component: np.ndarray) -> dict[str, np.ndarray]:
    """The object's core colour snapped to the palette, its soft coverage, and how mixed its colours are."""
    core = _core(np.linalg.norm(x - bg[:, None, None], axis=-1), component)
    colour = _masked_median(x, core)
    colour_index, colour_dist = _nearest(colour, _COLOR_RGB)
    alpha, residual = _mixture(x, bg, colour)
    off = (residual > MAX_COLOR_DISTANCE) & component
    spread = off.sum((1, 2)) / np.maximum(component.sum((1, 2)), 1)
    alpha *= ndimage.binary_dilation(component, structure=_PLANE)
    return dict(colour_index=colour_index, colour_dist=colour_dist, spread=spread, alpha=alpha)


def _geometry(alpha: np.ndarray) -> dict[str, np.ndarray]:
    """Shape, size and grid cell from the object's soft coverage and the template bank."""
    mass = np.maximum(alpha.sum((1, 2)), 1e-6)
    ys, xs = np.indices((IMAGE_SIZE, IMAGE_SIZE))
    centre = np.stack([(alpha * xs).sum((1, 2)), (alpha * ys).sum((1, 2))], 1) / mass[:, None]
    bank = _templates()
    iou = _match(_windows(alpha, centre), centre, bank)
    per_shape = np.stack([iou[:, bank.shape == si].max(1) for si in range(len(SHAPES))], 1)
    shape_index = per_shape.argmax(1)
    polygon_centre = centre - bank.offset[iou.argmax(1)]
    return dict(
        shape_index=shape_index,
        iou=per_shape.max(1),
        margin=per_shape.max(1) - np.sort(per_shape, 1)[:, -2],
        size_index=(mass > bank.area_threshold[shape_index]).astype(np.int64),
        row=np.abs(polygon_centre[:, 1:] - _ROW_Y).argmin(1),
        col=np.abs(polygon_centre[:, :1] - _COL_X).argmin(1),
    )


def _reason(f: dict[str, np.ndarray], i: int) -> str:
    """Why image ``i`` is unparseable, or '' when it is fine."""
    area, second, border = int(f["area"][i]), int(f["second"][i]), float(f["border"][i])
    bg_dist, colour_dist, spread, iou = f["bg_dist"][i], f["colour_dist"][i], f["spread"][i], f["iou"][i]
    checks = (
        (bg_dist > MAX_BACKGROUND_DISTANCE, f"border colour {bg_dist:.0f} from every background"),
        (area == 0, "no object"),
        (area < MIN_AREA, f"object too small ({area} px)"),
        (area > MAX_AREA, f"object too large ({area} px)"),
        (border > MAX_BORDER_FRACTION, f"object covers {border:.0%} of the border"),
        (second >= max(SECOND_OBJECT_AREA, 0.2 * area), f"several objects (second one {second} px)"),
        (colour_dist > MAX_COLOR_DISTANCE, f"object colour {colour_dist:.0f} from every palette colour"),
        (spread > MAX_COLOR_SPREAD, f"object not one colour ({spread:.0%} of it off)"),
        (iou < MIN_SHAPE_IOU, f"no recognisable shape (best IoU {iou:.2f})"),
    )
    return next((message for failed, message in checks if failed), "")


def _reading(f: dict[str, np.ndarray], i: int) -> OracleReading:
    """Assemble image ``i``'s reading from the per-batch arrays."""
    scores = {
        "shape_iou": float(f["iou"][i]),
        "shape_margin": float(f["margin"][i]),
        "color_distance": float(f["colour_dist"][i]),
        "background_distance": float(f["bg_dist"][i]),
    }
    reason = _reason(f, i)
    if reason:
        return OracleReading(False, reason, scores=scores)
    return OracleReading(
        True,
        shape=SHAPES[f["shape_index"][i]],
        color=_COLOR_NAMES[f["colour_index"][i]],
        size=_SIZE_NAMES[f["size_index"][i]],
        position=f"{_ROW_NAMES[f['row'][i]]}-{_COL_NAMES[f['col'][i]]}",
        background=_BG_NAMES[f["bg_index"][i]],
        scores=scores,
    )


def read_batch(images) -> list[OracleReading]:
    """Read a batch: (B,3,H,W) float in [0,1] (tensor or array) or (B,H,W,3) uint8."""
    x = _to_nhwc255(images)
    f = _segment(x)
    f |= _colour(x, f["bg"], f["component"])
    f |= _geometry(f["alpha"])
    return [_reading(f, i) for i in range(len(x))]


def read_attributes(image) -> OracleReading:
    """Read one image: (32,32,3) uint8, or float (3,H,W) / (H,W,3) in [0,1], tensor or array."""
    return read_batch(image[None])[0]


def agreement(target: dict, reading: OracleReading) -> dict[str, bool]:
    """Per attribute named in ``target`` that the reading has (a ``PatternReading`` has pattern and tag too): does
    the (valid) reading give the same value?"""
    read = reading.attributes()
    return {name: reading.valid and read[name] == value for name, value in target.items() if name in read}
