"""Word-swap and neuron counterfactuals of real world images, on the held-out test split.

    OMP_NUM_THREADS=1 python benchmarks/scripts/counterfactuals_world.py wordswap --n 32 \
        --out benchmarks/records/wordswap-world
    OMP_NUM_THREADS=1 python benchmarks/scripts/counterfactuals_world.py neuron --n 32 \
        --out benchmarks/records/neuron-images-world

``wordswap``: the first N circles of the split are null-text inverted with their captions (once per image);
from that inversion, word-swap counterfactuals (``circle`` -> ``square`` in the caption, search over tau) and
the optimised counterfactuals (``class_loss(square)`` with DiG-IN's background regularisers outside the true
object mask) are made; per method: the rate at which world:shape-net gives ``square`` a probability above 0.5,
the rate at which the oracle reads a square, and the mean absolute change of the true background pixels.

``neuron``: the first N images of the split, channel C of world:shape-net's penultimate layer raised from each
image's inversion with the background regularisers outside the true object mask; the activation on the image,
the inversion and the best iterate, and which attributes the oracle reads changed between image and result.

Both call the cores that ``featscope investigate word-swap | counterfactual | neuron --images`` run. One JSON
line per image goes to OUT/items.jsonl (a re-run skips the images already there); OUT/summary.json and
OUT/summary.md summarise the lines present, with 95% Wilson intervals.
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
from featscope.bench.stats import format_proportion, proportion
from featscope.extractors import load_extractor
from featscope.images import save_image, to_tensor
from featscope.investigate import cores
from featscope.investigate.cores import neuron_images_core
from featscope.investigate.wordswap import WordSwapConfig, word_swap_core
from featscope.solvers.configs import EndToEndConfig
from featscope.world.oracle import read_batch
from featscope.world.readout import compare
from featscope.world.render import ATTRIBUTES, object_mask
from featscope.world.splits import split_images

START, TARGET = "circle", "square"
FAST_RATES = {"latent_lr": 0.01, "cond_lr": 0.1, "uncond_lr": 0.1}  # 10x DiG-IN's, benchmarks/RESULTS.md


def _background_change(result: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> float:
    background = 1 - mask
    return float(((result - image).abs() * background).sum() / (3 * background.sum()))


def _prob(net, images: torch.Tensor, label: str) -> list[float]:
    return cores.confidences(net, images, net.labels.index(label))


def wordswap_item(backbone, net, image, record, config: EndToEndConfig, seed: int) -> dict:
    """Both counterfactuals of one image from one null-text inversion."""
    caption, mask = record.caption(), torch.from_numpy(object_mask(record))[None, None]
    tic = time.time()
    inverted = cores.null_inversion(backbone, image, caption, num_steps=config.num_steps,
                                    guidance_scale=config.guidance_scale)  # fmt: skip
    inversion_s = time.time() - tic
    swap_config = WordSwapConfig(num_steps=config.num_steps, guidance_scale=config.guidance_scale)
    tic = time.time()
    swap = word_swap_core(backbone, net, image, START, TARGET, prompts=caption, inverted=inverted, config=swap_config)
    swap_s = time.time() - tic
    tic = time.time()
    optimised = cores.counterfactual(backbone, net, image, START, TARGET, seeds=[seed], prompts=caption,
                                     mask=mask, inverted=inverted, config=config,
                                     start_from="reconstruction")  # fmt: skip (as its records were made)
    optimised_s = time.time() - tic
    results = {"word swap": swap.best, "optimised": optimised.best, "inversion": swap.reconstruction}
    row = {"caption": caption, "edited_caption": swap.edited_prompts[0], "chosen_tau": swap.chosen_tau[0],
           "seconds": {"inversion": inversion_s, "word swap": swap_s, "optimised": optimised_s}}  # fmt: skip
    for name, result in results.items():
        reading = read_batch(result)[0]
        row[name] = {
            "target_probability": _prob(net, result, TARGET)[0],
            "oracle_shape": reading.shape if reading.valid else None,
            "background_change": _background_change(result, image, mask),
            "l2_to_image": float((result - image).pow(2).mean().sqrt()),
        }
    return row, results


def neuron_item(backbone, net, image, record, config: EndToEndConfig, seed: int, channel: int) -> dict:
    """One image's neuron counterfactual: activations and the oracle's readings of image and result."""
    mask = torch.from_numpy(object_mask(record))[None, None]
    result = neuron_images_core(backbone, net, image, channel, seeds=[seed], prompts=record.caption(), mask=mask,
                                config=config)  # fmt: skip
    best = result.best
    reading = compare(image, best)[0]
    return {
        "caption": record.caption(),
        "channel": channel,
        "best_iteration": result.best_iteration(0),
        "activation": {
            "image": result.image_activation[0],
            "inversion": result.activation[0][0],
            "after": result.activation[0][result.best_iteration(0)],
        },  # fmt: skip
        "background_change": _background_change(best, image, mask),
        "oracle": reading,
    }, {"result": best, "inversion": result.images[0]}


def _done(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def summarise_wordswap(rows: list[dict]) -> tuple[dict, str]:
    n = len(rows)
    summary = {"n": n, "start": START, "target": TARGET, "methods": {}}
    lines = ["| method | shape-net p(square) > 0.5 | oracle reads a square | background change (mean abs) [95% CI] "
             "| L2 to image |", "|---|---|---|---|---|"]  # fmt: skip
    for name in ("word swap", "optimised", "inversion"):
        flips = proportion(sum(r[name]["target_probability"] > 0.5 for r in rows), n)
        oracle = proportion(sum(r[name]["oracle_shape"] == TARGET for r in rows), n)
        change = np.array([r[name]["background_change"] for r in rows])
        low, high = _mean_interval(change)
        l2 = float(np.mean([r[name]["l2_to_image"] for r in rows]))
        summary["methods"][name] = {"flip": flips, "oracle_reads_target": oracle,
                                    "background_change": {"mean": float(change.mean()), "low": low, "high": high},
                                    "l2_to_image_mean": l2}  # fmt: skip
        lines.append(f"| {name} | {format_proportion(flips)} | {format_proportion(oracle)} | "
                     f"{change.mean():.4f} [{low:.4f}, {high:.4f}] | {l2:.4f} |")  # fmt: skip
    paired = np.array([r["word swap"]["background_change"] - r["optimised"]["background_change"] for r in rows])
    low, high = _mean_interval(paired)
    summary["background_change_word_swap_minus_optimised"] = {"mean": float(paired.mean()), "low": low, "high": high}
    lines.append(f"\nbackground change, word swap minus optimised (paired, per image): {paired.mean():+.4f} "
                 f"[{low:+.4f}, {high:+.4f}]")  # fmt: skip
    taus = [r["chosen_tau"] for r in rows]
    summary["chosen_tau_counts"] = {f"{t:g}": taus.count(t) for t in sorted(set(taus))}
    lines.append(f"chosen tau (images): {summary['chosen_tau_counts']}")
    return summary, "\n".join(lines)


def summarise_neuron(rows: list[dict]) -> tuple[dict, str]:
    n = len(rows)
    image = np.array([r["activation"]["image"] for r in rows])
    inversion = np.array([r["activation"]["inversion"] for r in rows])
    after = np.array([r["activation"]["after"] for r in rows])
    ratio = after / np.maximum(image, 1e-6)
    rose = proportion(int((after > image).sum()), n)
    valid = [r for r in rows if r["oracle"] is not None and r["oracle"]["valid"]]
    changed = {name: proportion(sum(name in r["oracle"]["changed"] for r in valid), len(valid)) for name in ATTRIBUTES}
    readable = proportion(len(valid), n)
    change = np.array([r["background_change"] for r in rows])
    summary = {"n": n, "channel": rows[0]["channel"] if rows else None,
               "activation_mean": {"image": float(image.mean()), "inversion": float(inversion.mean()),
                                   "after": float(after.mean())},
               "ratio_after_over_image": {"median": float(np.median(ratio)), "mean": float(ratio.mean())},
               "rose": rose, "oracle_readable": readable, "oracle_changed": changed,
               "background_change": {"mean": float(change.mean()), "interval": _mean_interval(change)}}  # fmt: skip
    lines = [
        f"activation mean: image {image.mean():.3f}, inversion {inversion.mean():.3f}, after {after.mean():.3f}; "
        f"ratio after / image: median {np.median(ratio):.2f}; rose on {format_proportion(rose)} (n={n})",
        f"oracle reads one clear object in the result: {format_proportion(readable)}",
        "| attribute | changed (of readable results) |",
        "|---|---|",
        *[f"| {name} | {format_proportion(p)} |" for name, p in changed.items()],
        f"background change (mean abs): {change.mean():.4f} [{_mean_interval(change)[0]:.4f}, "
        f"{_mean_interval(change)[1]:.4f}]",
    ]
    return summary, "\n".join(lines)


def _mean_interval(values: np.ndarray) -> tuple[float, float]:
    """95% interval of a mean (normal approximation, sample standard deviation)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    half = 1.959963984540054 * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["wordswap", "neuron"])
    parser.add_argument("--n", type=int, default=32, help="images of the split")
    parser.add_argument("--split", default="test", choices=["test", "tuning"])
    parser.add_argument("--iterations", type=int, default=10, help="Adam steps of the optimised methods")
    parser.add_argument("--channel", type=int, default=3, help="channel of shape-net's penultimate layer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--summary-only", action="store_true", help="only summarise the lines present")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = out / "items.jsonl"
    config = EndToEndConfig(iterations=args.iterations, **FAST_RATES)
    fixed = {"shape": START} if args.part == "wordswap" else {}
    arrays, records = split_images(args.n, args.split, **fixed)
    images = to_tensor(arrays)
    if not args.summary_only:
        backbone = load_backbone("world:ddpm", device="cpu")
        net = load_extractor("world:shape-net@fc", device="cpu")
        for i in range(len(_done(items)), args.n):
            tic = time.time()
            if args.part == "wordswap":
                row, pictures = wordswap_item(backbone, net, images[i : i + 1], records[i], config, args.seed + i)
            else:
                row, pictures = neuron_item(backbone, net, images[i : i + 1], records[i], config, args.seed + i,
                                            args.channel)  # fmt: skip
            row = {"index": i, "split": args.split, "wall_seconds": round(time.time() - tic, 1), **row}
            with items.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            if i < 8:
                row_images = [images[i], *[p[0] for p in pictures.values()]]
                save_image(torch.cat(row_images, dim=2), out / f"image{i}.png")
            print(f"{args.part} {i}: {time.time() - tic:.0f} s", flush=True)
    rows = _done(items)
    summary, table = (summarise_wordswap if args.part == "wordswap" else summarise_neuron)(rows)
    summary.update({"split": args.split, "solver": config.to_dict(), "machine": platform.machine(),
                    "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")})  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(f"{args.part}, {args.split} split, n={len(rows)}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
