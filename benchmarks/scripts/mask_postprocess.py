"""Which post-processing of the cross-attention mask fits world images: IoU with the renderer's object mask.

    OMP_NUM_THREADS=1 python benchmarks/scripts/mask_postprocess.py --n 16 --split tuning \
        --out benchmarks/records/investigate-world/tuning-mask-postprocess

The first N images of the split are null-text inverted with their captions (as ``featscope investigate`` inverts
them), and the shape word's cross-attention map is read while each is regenerated
(:func:`featscope.investigate.masks.cross_attention_map`, the map ``--mask cross-attention`` cuts). Each
threshold (Otsu's, 0.3) and post-processing (none; ``published``: DiG-IN's erosion 3, dilation 20, blur 45/30
scaled to the image's side, :func:`featscope.investigate.masks.scaled_steps`) makes a mask, compared with the
renderer's object coverage: soft IoU (sum of minima over sum of maxima), the share of the object inside the mask
(coverage) and the share of the background inside it (leak), as means with 95% intervals over the images.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.investigate import cores
from featscope.investigate.masks import cross_attention_map, postprocess_mask, scaled_steps, threshold_mask
from featscope.world.render import object_mask
from featscope.world.splits import split_images

THRESHOLDS = ("otsu", 0.3)
POSTPROCESS = {"none": (), "published": ("published",)}


def _scores(mask: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    iou = float(torch.minimum(mask, true).sum() / torch.maximum(mask, true).sum().clamp(min=1e-9))
    coverage = float((mask * true).sum() / true.sum().clamp(min=1e-9))
    leak = float((mask * (1 - true)).sum() / (1 - true).sum().clamp(min=1e-9))
    return {"iou": iou, "coverage": coverage, "leak": leak}


def _interval(values: list[float]) -> tuple[float, float, float]:
    v = np.array(values)
    half = 1.959963984540054 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--split", default="tuning", choices=["tuning", "test"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone("world:ddpm", device="cpu")
    arrays, records = split_images(args.n, args.split)
    images = to_tensor(arrays)
    rows: dict[str, list[dict]] = {}
    tic = time.time()
    for i, record in enumerate(records):
        caption = record.caption()
        x_t, nulls = cores.null_inversion(backbone, images[i : i + 1], caption, num_steps=20, guidance_scale=3.0)
        soft = cross_attention_map(backbone, x_t, caption, record.shape, null_texts=nulls, guidance_scale=3.0)
        true = torch.from_numpy(object_mask(record))[None, None]
        for threshold in THRESHOLDS:
            for name, steps in POSTPROCESS.items():
                mask = postprocess_mask(threshold_mask(soft, threshold), steps)
                rows.setdefault(f"threshold {threshold}, post-processing {name}", []).append(_scores(mask, true))
        print(f"image {i}: {time.time() - tic:.0f} s", flush=True)
    summary = {"n": args.n, "split": args.split, "published_scaled_to_32px": scaled_steps(32), "rows": {},
               "machine": platform.machine(), "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    lines = [f"cross-attention masks of the first {args.n} {args.split} images against the renderer's object mask "
             f"(published post-processing at 32 px: {', '.join(scaled_steps(32))})", "",
             "| mask | IoU [95% CI] | object coverage | background leak |", "|---|---|---|---|"]  # fmt: skip
    for name, scores in rows.items():
        entry = {key: _interval([s[key] for s in scores]) for key in ("iou", "coverage", "leak")}
        summary["rows"][name] = {**entry, "per_image": scores}
        iou, coverage, leak = entry["iou"], entry["coverage"], entry["leak"]
        lines.append(f"| {name} | {iou[0]:.3f} [{iou[1]:.3f}, {iou[2]:.3f}] | {coverage[0]:.3f} | {leak[0]:.3f} |")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
