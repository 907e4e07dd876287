"""Pool `featscope bench` rows measured on several target sets into one 12-target (or N-target) comparison.

    python benchmarks/scripts/pool_target_sets.py --base benchmarks/records/preset-search-v7250 --out DIR \
        --row reference=tuning/presets:reference,held-out/presets:reference,fresh/reference:reference \
        --row refine=tuning/presets-s9:refine,held-out/presets-s9:refine,fresh/presets-s9:refine

Each --row is LABEL=PART,PART,... with PART = FOLDER[:ROW] (a bench output folder under --base and the row
label inside it; without :ROW the folder's only row). Every row must list the same folders' targets in the
same order, so target i is the same image in every row. The first row is the baseline of the ratios.
Writes pooled.json (per row: every target's relative distance, whether the oracle reads --attribute
(default shape) back, pixel noise and background deviation where recorded or computable from a kept
image; the medians, the ratio of medians, the targets it beats the baseline on), pooled.md and
distance_vs_evaluations.png. A missing folder or row is a usage error (exit code 2).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
from pathlib import Path

from matplotlib.figure import Figure

from featscope.bench.metrics import background_deviation, pixel_noise
from featscope.bench.run import RESULTS
from featscope.images import load_image, to_uint8
from featscope.runs import atomic_write_bytes, atomic_write_text
from featscope.world.render import ATTRIBUTES


def image_metrics(base: Path, folder: str, row: dict, sample: dict) -> dict:
    """A sample's pixel noise and background deviation: each from results.json where recorded, else from its
    saved image if kept (loaded once for both), else None."""
    metrics = {"pixel_noise": pixel_noise, "background_deviation": background_deviation}
    values = {key: sample.get(key) for key in metrics}
    path = base / folder / row["images"] / f"{sample['index']:03d}.png"
    missing = [key for key, value in values.items() if value is None]
    if missing and path.is_file():
        image = to_uint8(load_image(path))
        values.update({key: float(metrics[key](image)[0]) for key in missing})
    return values


def read_part(base: Path, part: str) -> tuple[dict, dict, str]:
    """The bench report, the chosen row and its extractor's name, of FOLDER[:ROW]."""
    folder, _, label = part.partition(":")
    report = json.loads((base / folder / RESULTS).read_text())
    (entry,) = report["extractors"]
    rows = [r for r in entry["rows"] if r["label"] == label] if label else entry["rows"]
    if len(rows) != 1:
        raise ValueError(f"{folder}: expected one row {label!r}, found {[r['label'] for r in entry['rows']]}")
    return report, rows[0], entry["extractor"]


def pool_row(base: Path, label: str, parts: list[str], attribute: str) -> dict:
    """One pooled row: the per-target numbers of every part, in order."""
    targets, evaluations, extractor = [], set(), set()
    for part in parts:
        folder = part.partition(":")[0]
        report, row, spec = read_part(base, part)
        extractor.add(spec)
        evaluations.add(row["network_evaluations_per_image"])
        for sample in row["samples"]:
            targets.append(
                {
                    "set": f"{folder} (seed {report['config']['seed']}, #{sample['index']})",
                    "relative_distance": sample["relative_distance"],
                    "kept": sample["agreement"][attribute],
                    **image_metrics(base, folder, row, sample),
                }
            )
    if len(evaluations) != 1 or len(extractor) != 1:
        raise ValueError(f"row {label}: parts differ in evaluations {evaluations} or extractor {extractor}")
    distances = [t["relative_distance"] for t in targets]
    noise = [t["pixel_noise"] for t in targets if t["pixel_noise"] is not None]
    background = [t["background_deviation"] for t in targets if t["background_deviation"] is not None]
    return {
        "label": label,
        "extractor": extractor.pop(),
        "parts": parts,
        "network_evaluations_per_image": evaluations.pop(),
        "median_relative_distance": statistics.median(distances),
        "attribute": attribute,
        "kept": sum(t["kept"] for t in targets),
        "median_pixel_noise": statistics.median(noise) if noise else None,
        "median_background_deviation": statistics.median(background) if background else None,
        "images_scored": len(noise),
        "targets": targets,
    }


def compare(rows: list[dict]) -> None:
    """Add each row's ratio to the first row's median and the targets on which it is nearer than the first."""
    baseline = rows[0]
    for row in rows:
        if len(row["targets"]) != len(baseline["targets"]):
            raise ValueError(
                f"row {row['label']} has {len(row['targets'])} targets, {baseline['label']} has "
                f"{len(baseline['targets'])}"
            )
        row["ratio_to_first"] = row["median_relative_distance"] / baseline["median_relative_distance"]
        row["nearer_than_first"] = sum(
            a["relative_distance"] < b["relative_distance"]
            for a, b in zip(row["targets"], baseline["targets"], strict=True)
        )


def markdown(rows: list[dict]) -> str:
    n, first = len(rows[0]["targets"]), rows[0]["label"]
    lines = [
        f"| row | evaluations / image | median relative distance ({n} targets) | x {first} | nearer than {first} "
        f"| {rows[0]['attribute']} kept | pixel noise (median) | bg dev. (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        scored = "" if row["images_scored"] in (0, n) else f" ({row['images_scored']} images)"
        noise, background = row["median_pixel_noise"], row["median_background_deviation"]
        lines.append(
            f"| {row['label']} | {row['network_evaluations_per_image']:,} | {row['median_relative_distance']:.5f} "
            f"| {row['ratio_to_first']:.2f} | {row['nearer_than_first']}/{n} | {row['kept']}/{n} "
            f"| {'' if noise is None else f'{noise:.2f}{scored}'} "
            f"| {'' if background is None else f'{background:.2f}{scored}'} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict]) -> bytes:
    """Median relative distance against evaluations per image, one labelled point per row; dashed: the first
    row's distance and a tenth of its evaluations (the issue's bar)."""
    base = rows[0]
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    ax.axhline(base["median_relative_distance"], color="grey", linestyle="--", linewidth=1)
    ax.axvline(base["network_evaluations_per_image"] / 10, color="grey", linestyle=":", linewidth=1)
    for i, row in enumerate(rows):
        x, y = row["network_evaluations_per_image"], row["median_relative_distance"]
        ax.scatter(x, y, color=f"C{i % 10}", marker="os^Dv<>ph*"[i // 10 % 10], zorder=3)
        ax.annotate(row["label"], (x, y), xytext=(5, 2), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (log)")
    ax.set_ylabel(f"relative feature distance, median of {len(base['targets'])} targets (log)")
    ax.set_title(f"{base['extractor']}; dashed: {base['label']}'s distance, dotted: 10% of its evaluations")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=Path("."), help="folder the parts are relative to")
    parser.add_argument("--row", action="append", required=True, metavar="LABEL=PART,PART")
    parser.add_argument("--attribute", default="shape", choices=ATTRIBUTES, help="the oracle's kept-attribute column")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        specs = [spec.split("=", 1) for spec in args.row]
        rows = [pool_row(args.base, label, parts.split(","), args.attribute) for label, parts in specs]
        compare(rows)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "pooled.json", json.dumps({"base": str(args.base), "rows": rows}, indent=1))
    atomic_write_text(args.out / "pooled.md", markdown(rows))
    atomic_write_bytes(args.out / "distance_vs_evaluations.png", figure(rows))
    print(markdown(rows), end="")
    print(f"wrote {args.out}/ (pooled.json, pooled.md, distance_vs_evaluations.png)")


if __name__ == "__main__":
    main()
