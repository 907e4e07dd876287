"""FeatInv next to the universal decoder on the same world targets: attributes kept, feature cosine, time."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from featscope.bench.investigation import save_grid
from featscope.bench.run import check_out, machine
from featscope.bench.stats import format_proportion, proportion
from featscope.decoding import decode
from featscope.featinv import SampleSettings, encode, load_model, reconstruct
from featscope.featinv.reconstruct import load_parts
from featscope.featinv.world import resolve_model
from featscope.images import to_tensor
from featscope.runs import atomic_write_json, atomic_write_text
from featscope.world.oracle import agreement, read_batch
from featscope.world.render import ATTRIBUTES, generate

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
    seed: int = 0,
    preset: str = "fast",
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Decode ``n`` world targets from the FeatInv model's layer with FeatInv and with the universal decoder.

    Both get the same target feature maps (the model's extractor and layer) and write results.json/.md.
    """
    out = Path(out)
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    featinv_model = load_model(resolve_model(model))
    backbone, extractor = load_parts(featinv_model)
    arrays, records = generate(n, seed)
    images = to_tensor(arrays)
    targets = encode(featinv_model, images, extractor).cpu()
    settings = SampleSettings()
    tic = time.time()
    recon = reconstruct(featinv_model, targets, backbone=backbone, settings=settings).cpu()
    featinv_row = _row("featinv", recon, targets, records, extractor, time.time() - tic, settings.num_steps)
    tic = time.time()
    result = decode(features=targets, backbone=backbone, extractor=extractor, preset=preset, seed=seed, quiet=quiet)
    evals = result.metrics[0]["network_evaluations"]
    universal_row = _row(f"universal ({preset})", result.best, targets, records, extractor, time.time() - tic, evals)
    save_grid(torch.cat([images[:8], recon[:8], result.best[:8]]), out / "featinv-vs-universal.png")
    report = {
        "config": {
            "n": n,
            "seed": seed,
            "model": str(resolve_model(model)),
            "extractor": featinv_model.config.extractor,
            "preset": preset,
            "featinv_sampling": vars(settings),
        },
        "machine": machine(),
        "rows": [featinv_row, universal_row],
        "speedup": universal_row["seconds_per_image"] / featinv_row["seconds_per_image"],
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
        "| method | valid | " + " | ".join(ATTRIBUTES) + " | feature cosine | s / image | evals / image |",
        "|---|---|" + "---|" * len(ATTRIBUTES) + "---|---|---|",
    ]
    for row in report["rows"]:
        cells = [row["method"], format_proportion(row["valid"])]
        cells += [format_proportion(row["agreement"][a]) for a in ATTRIBUTES]
        cells += [f"{row['feature_cosine_mean']:.3f}", f"{row['seconds_per_image']:.3g}",
                  str(row["network_evaluations_per_image"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"FeatInv is {report['speedup']:.1f}x faster per image.", ""]
    return "\n".join(lines)
