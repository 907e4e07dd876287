"""FeatInv next to the universal decoder on the same world targets: attributes kept, feature cosine, time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from featscope.bench.investigation import save_grid
from featscope.bench.run import check_out, machine
from featscope.bench.stats import format_proportion, proportion
from featscope.bench.targets import DEFAULT_SPLIT, TargetSource
from featscope.decode_run import decode
from featscope.featinv import SampleSettings, encode, load_model, reconstruct
from featscope.featinv.reconstruction import load_parts
from featscope.featinv.world import resolve_model
from featscope.images import to_tensor
from featscope.runs import atomic_write_json, atomic_write_text
from featscope.world.oracle import agreement, read_batch
from featscope.world.render import ATTRIBUTES

RESULTS = "results.json"


def _cosine(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return torch.nn.functional.cosine_similarity(a.flatten(1).float(), b.flatten(1).float()).tolist()


def _row(name: str, images: torch.Tensor, targets: torch.Tensor, records, extractor, seconds: float, evals: int):
    readings = read_batch(images)
    with torch.no_grad():
        cos = _cosine(extractor(images.to(next(extractor.parameters()).device)).cpu(), targets)
    n = len(records)
    hits = [agreement(record.attributes(), reading) for record, reading in zip(records, readings, strict=True)]
    return {
        "method": name,
        "valid": proportion(sum(r.valid for r in readings), n),
        "agreement": {a: proportion(sum(h[a] for h in hits), n) for a in ATTRIBUTES},
        "feature_cosine_mean": sum(cos) / n,
        "seconds_per_image": seconds / n,
        "network_evaluations_per_image": evals,
    }


def run_featinv_bench(
    out: str | Path,
    *,
    model: str | Path | None = None,
    n: int = 32,
    split: str | None = DEFAULT_SPLIT,
    seed: int | None = None,
    preset: str = "fast",
    featinv_steps: Sequence[int] = (50,),
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Decode ``n`` world targets from the FeatInv model's layer with FeatInv (one row per DDIM step count in
    ``featinv_steps``) and with the universal decoder's ``preset``, and write results.json/.md.

    Targets come from the evaluation ``split`` or ``seed``'s stream (:class:`~featscope.bench.targets.TargetSource`).
    Every row gets the same target feature maps (the model's extractor and layer) in the same process.
    """
    out = Path(out)
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    featinv_model = load_model(resolve_model(model))
    backbone, extractor = load_parts(featinv_model)
    source = TargetSource(split, seed)
    arrays, records = source.images(n)
    images = to_tensor(arrays)
    targets = encode(featinv_model, images, extractor).cpu()
    rows, grids = [], [images[:8]]
    for steps in featinv_steps:
        settings = SampleSettings(num_steps=steps)
        tic = time.time()
        recon = reconstruct(featinv_model, targets, backbone=backbone, settings=settings).images
        rows.append(_row(f"featinv ({steps} steps)", recon, targets, records, extractor, time.time() - tic, steps))
        grids.append(recon[:8])
    tic = time.time()
    seed = source.noise_seed
    result = decode(features=targets, backbone=backbone, extractor=extractor, preset=preset, seed=seed, quiet=quiet)
    evals = result.metrics[0]["network_evaluations"]
    universal_row = _row(f"universal ({preset})", result.best, targets, records, extractor, time.time() - tic, evals)
    for row in rows:
        row["speedup"] = universal_row["seconds_per_image"] / row["seconds_per_image"]
    save_grid(torch.cat([*grids, result.best[:8]]), out / "featinv-vs-universal.png")
    report = {
        "config": {
            "n": n,
            **source.record(),
            "model": str(resolve_model(model)),
            "extractor": featinv_model.config.extractor,
            "preset": preset,
            "featinv_sampling": {**vars(SampleSettings()), "num_steps": list(featinv_steps)},
        },
        "machine": machine(),
        "rows": [*rows, universal_row],
    }
    atomic_write_json(out / RESULTS, report)
    atomic_write_text(out / "results.md", featinv_markdown(report))
    return report


def featinv_markdown(report: dict) -> str:
    """The comparison as a Markdown table."""
    c = report["config"]
    lines = [
        f"# FeatInv vs the universal decoder ({c['extractor']}, {c['n']} world targets)",
        "",
        "| method | valid | " + " | ".join(ATTRIBUTES) + " | feature cosine | s / image | evals / image | speed-up |",
        "|---|---|" + "---|" * len(ATTRIBUTES) + "---|---|---|---|",
    ]
    for row in report["rows"]:
        cells = [row["method"], format_proportion(row["valid"])]
        cells += [format_proportion(row["agreement"][a]) for a in ATTRIBUTES]
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "1x"
        cells += [f"{row['feature_cosine_mean']:.3f}", f"{row['seconds_per_image']:.3g}",
                  str(row["network_evaluations_per_image"]), speedup]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Speed-up: the universal decoder's seconds per image over the row's, in the same process.", ""]
    return "\n".join(lines)
