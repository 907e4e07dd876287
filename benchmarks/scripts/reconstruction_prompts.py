"""Null-text inversion's reconstruction on world images, by prompt and inner steps (issue #32).

    OMP_NUM_THREADS=1 python benchmarks/scripts/reconstruction_prompts.py --split tuning --n 12 \
        --out benchmarks/records/investigate-world/tuning-reconstruction

Per image of the split and per setting (prompt: the image's caption, its shape word as ``{label}`` gives it,
or the empty prompt; inner null-text steps): the reconstruction's pixel L2 (RMS) to the image, plain DDIM
inversion's, and the attributes the oracle reads changed between image and reconstruction. One JSON line per
(image, setting) to OUT/items.jsonl (a re-run skips those there). Calls ``featscope.investigate.cores.invert``,
what ``featscope invert`` and every inversion-based method run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from featscope.backbones import load_backbone
from featscope.images import to_tensor
from featscope.investigate import cores
from featscope.world.readout import compare
from featscope.world.splits import split_images

SETTINGS = {  # name: (prompt kind, inner steps, guidance scale)
    "caption": ("caption", 10, 3.0),
    "label": ("label", 10, 3.0),
    "label-inner50": ("label", 50, 3.0),
    "empty": ("empty", 10, 3.0),
}


def _prompt(kind: str, record) -> str:
    return {"caption": record.caption(), "label": record.shape, "empty": ""}[kind]


def choose_threshold(rows: list[dict]) -> dict:
    """The L2 threshold that best separates reconstructions the oracle reads unchanged from those in which it reads
    a changed attribute (fewest errors; among equals, the midpoint of the widest gap between neighbouring L2s)."""
    points = sorted((r["l2"], bool(r["changed"])) for r in rows if r["changed"] is not None)
    cuts = [(a[0] + b[0]) / 2 for a, b in zip(points, points[1:], strict=False)]
    scored = []
    for i, cut in enumerate(cuts):
        errors = sum(bad != (l2 > cut) for l2, bad in points)
        scored.append((errors, -(points[i + 1][0] - points[i][0]), cut))
    errors, _, cut = min(scored)
    return {"threshold": cut, "errors": errors, "n": len(points), "changed": sum(bad for _, bad in points)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="tuning")
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--setting", action="append", choices=list(SETTINGS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "items.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    done = {(r["index"], r["setting"]) for r in map(json.loads, lines)}
    backbone = load_backbone("world:ddpm", device="cpu")
    arrays, records = split_images(args.n, args.split)
    images = to_tensor(arrays)
    for name in args.setting or list(SETTINGS):
        kind, inner, scale = SETTINGS[name]
        for i, record in enumerate(records):
            if (i, name) in done:
                continue
            tic = time.time()
            prompt = _prompt(kind, record)
            result = cores.invert(backbone, images[i : i + 1], prompt, guidance_scale=scale, inner_steps=inner)
            reading = compare(images[i : i + 1], result.reconstruction)[0]
            row = {"split": args.split, "index": i, "setting": name, "prompt": prompt, "inner_steps": inner,
                   "guidance_scale": scale, "l2": result.distance[0]["l2"], "ddim_l2": result.ddim_distance[0]["l2"],
                   "changed": sorted(reading["changed"]) if reading else None,
                   "seconds": round(time.time() - tic, 1)}  # fmt: skip
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    choice = choose_threshold(rows)
    (args.out / "threshold.json").write_text(json.dumps(choice, indent=2) + "\n")
    print(json.dumps(choice))


if __name__ == "__main__":
    main()
