"""docs/speed-frontier.png: median relative feature distance against cost per image, one marker per setting.

Reads the per-target lines of ``decode_search.py`` (search points on the tuning split, presets on the test
split): left panel against network evaluations, right against UNet-forward-equivalents (log axes); marker
shape = solver family, colour = median background deviation; presets on the test split are large stars with
a red edge, scored on the test targets that ``reference`` was run on (so that every star is on the same targets).

    python benchmarks/scripts/decode_plot.py benchmarks/records/decode-search/screen*-tuning*.jsonl \\
        --test benchmarks/records/decode-test/*.jsonl --out docs/speed-frontier.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from decode_search import summarise  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from featscope.solvers.configs import PRESETS  # noqa: E402

REFERENCE = PRESETS["reference"]

FAMILIES = {  # name prefix -> (label, marker)
    "mpgd": ("MPGD: x0 guidance only", "s"),
    "tfg": ("TFG: x_t + x0 guidance", "D"),
    "bwd": ("backward guidance (+ sparsity)", "v"),
    "fast-track": ("DDIM (x_t guidance)", "o"),
    "dpmpp": ("DPM-Solver++ (x_t guidance)", "^"),
    "ddim": ("DDIM (x_t guidance)", "o"),
}


def family(name: str) -> tuple[str, str]:
    for prefix, value in FAMILIES.items():
        if name.startswith(prefix):
            return value
    return ("preset (test split)", "*")


def load(paths: list[str]) -> list[dict]:
    return [json.loads(x) for p in paths for x in Path(p).read_text().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("search", nargs="+", help="decode_search.py lines of the tuning search")
    parser.add_argument("--test", nargs="*", default=[], help="decode_search.py lines of the test split")
    parser.add_argument("--out", required=True)
    parser.add_argument("--label", nargs="*", default=[], metavar="CONFIG=LABEL", help="names shown for test lines")
    args = parser.parse_args()
    names = dict(x.split("=", 1) for x in args.label)
    rows = [r for r in summarise(load(args.search)) if r["extractor"] == "all" and "unguided" not in r["config"]]
    test_lines = load(args.test)
    on_reference = {(x["extractor"], x["index"]) for x in test_lines if x["config"] == "reference"}
    paired = [x for x in test_lines if (x["extractor"], x["index"]) in on_reference]
    tests = [r for r in summarise(paired) if r["extractor"] == "all"] if paired else []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    points = rows + tests
    colours = [r["background_deviation"]["median"] for r in points]
    norm = LogNorm(vmin=max(min(colours), 0.1), vmax=max(colours))
    costs = ("network_evaluations", "unet_equivalents")
    labels = ("network evaluations per image", "UNet-forward-equivalents per image")
    for ax, cost, label in zip(axes, costs, labels, strict=True):
        seen = set()
        for r in points:
            is_test = r in tests
            name, marker = ("preset (test split)", "*") if is_test else family(r["config"])
            scatter = ax.scatter(
                r[cost], r["relative_distance"]["median"], c=[r["background_deviation"]["median"]],
                cmap="viridis", norm=norm, marker=marker, s=160 if is_test else 50,
                edgecolors="red" if is_test else "black", label=None if name in seen else name,
            )  # fmt: skip
            seen.add(name)
            if is_test:
                text = f"{names.get(r['config'], r['config'])} (test, n={r['n']})"
                ax.annotate(text, (r[cost], r["relative_distance"]["median"]),
                            fontsize=7, xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ref_cost = REFERENCE.network_evaluations() if cost == "network_evaluations" else REFERENCE.unet_equivalents()
        ax.axvline(ref_cost / 100, color="grey", ls=":", lw=1)
        ax.annotate("1% of reference", (ref_cost / 100, 0.5), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, ha="right", color="grey")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlim(right=ref_cost * 8)  # room for the reference star's label
        ax.set_yscale("log")
        ax.set_xlabel(label)
    axes[0].set_ylabel("median relative feature distance")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=3)
    fig.colorbar(scatter, ax=axes, label="median background deviation (0-255)")
    fig.suptitle("Search points: tuning split (first screen: 4 targets each of shape-net and color-net; later screens: "
                 "8 of each world network); stars: presets on the test targets reference ran on", fontsize=8)
    fig.savefig(args.out, dpi=90, bbox_inches="tight")


if __name__ == "__main__":
    main()
