"""The bench's readable outputs: a markdown table per extractor and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from featscope.bench.stats import format_proportion
from featscope.world.kinds import DEFAULT_KIND, scene_kind

SAMPLES_SHOWN = 8  # targets in samples.png
MARKERS = "os^Dv<>ph*"  # one per row of an extractor in the distance plot
LEADING = ("row", "rel. distance (median)", "rel. distance (mean)", "cosine", "pixel noise", "bg dev.", "valid")
TRAILING = ("evals/image", "s/image", "peak MB")  # a column per attribute of the scene kind between the two


def attributes_of(report: dict) -> tuple[str, ...]:
    """The attributes of the report's scene kind (records from before kinds: the shapes world's)."""
    return tuple(scene_kind(report["config"].get("kind", DEFAULT_KIND)).attributes)


def _table_row(row: dict, attributes: tuple[str, ...]) -> str:
    cells = [
        row["label"],
        f"{row['relative_distance']['median']:.3g}",
        f"{row['relative_distance']['mean']:.3g}",
        f"{row['cosine']['mean']:.3f}",
        f"{row['pixel_noise']['median']:.2f}" if "pixel_noise" in row else "",
        f"{row['background_deviation']['median']:.2f}" if "background_deviation" in row else "",
        format_proportion(row["valid"]),
        *(format_proportion(row["agreement"][name]) for name in attributes),
        str(row["network_evaluations_per_image"]),
        f"{row['wall_seconds_per_image']:.3g}",
        f"{row['peak_memory_mb']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _table(entry: dict, attributes: tuple[str, ...]) -> list[str]:
    columns = (*LEADING, *attributes, *TRAILING)
    return [
        f"## {entry['extractor']} (layer {entry['layer'] or 'output'})",
        "",
        f"Relative distance = squared feature distance / {entry['pair_median_distance']:.4g}, the median over "
        "random pairs of world images.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *(_table_row(row, attributes) for row in entry["rows"]),
        "",
        *(f"- {row['label']}: {_settings_text(row['settings'])}" for row in entry["rows"] if row["preset"] is None),
        "",
    ]


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in settings.items())


def markdown(report: dict) -> str:
    """``results.md``: the run in one paragraph, chance levels, then a table per extractor."""
    config, attributes = report["config"], attributes_of(report)
    kind = config.get("kind", DEFAULT_KIND)
    chance = ", ".join(f"{name} {100 * p:.0f}%" for name, p in report["chance"].items())
    ceiling = report["oracle_on_targets"]
    oracle = ", ".join(
        [f"valid {format_proportion(ceiling['valid'])}"]
        + [f"{name} {format_proportion(ceiling['agreement'][name])}" for name in attributes]
    )
    if config.get("seed") is None:
        source = f"the {config.get('split')} split, target i decoded from seed i"
    else:
        source = f"seed {config['seed']}, target i decoded from seed {config['seed']} + i"
    lines = [
        "# featscope bench",
        "",
        f"{config['n']} world targets ({kind} scenes, {source}), "
        f"backbone {config['backbone']}, featscope {config['featscope']}, torch {config['torch']}, "
        f"{config['device']}, {config['date']}. Agreement: share of targets whose attribute the oracle reads back "
        "from the decoded image, with a 95% Wilson interval.",
        "",
        f"Chance: {chance}.",
        "",
        f"Oracle on the targets themselves: {oracle}.",
        "",
    ]
    if "background_deviation_of_targets" in report:  # older records lack it (merge_bench.py reads them)
        lines += [
            "Pixel noise: per image the mean |image - its 3x3 median| (0-255); bg dev.: the mean |pixel - "
            "background colour| away from the object (0-255); medians over targets. On the targets themselves: "
            f"{report['pixel_noise_of_targets']['median']:.2f} and "
            f"{report['background_deviation_of_targets']['median']:.2f}.",
            "",
        ]
    lines += [f"{note}." for note in report.get("skipped", [])] + ([""] if report.get("skipped") else [])
    for entry in report["extractors"]:
        lines += _table(entry, attributes)
    return "\n".join(lines)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def agreement_figure(report: dict) -> bytes:
    """Per extractor: agreement bars per attribute and row, 95% Wilson error bars, a chance line."""
    entries, attributes = report["extractors"], attributes_of(report)
    figure = Figure(figsize=(9, 3.2 * len(entries)))
    for ax, entry in zip(figure.subplots(len(entries), 1, squeeze=False)[:, 0], entries, strict=True):
        rows = entry["rows"]
        width = 0.8 / len(rows)
        for j, row in enumerate(rows):
            x = np.arange(len(attributes)) + (j - (len(rows) - 1) / 2) * width
            stats = [row["agreement"][name] for name in attributes]
            rates = np.array([s["rate"] for s in stats])
            lows, highs = np.array([s["low"] for s in stats]), np.array([s["high"] for s in stats])
            errors = np.clip([rates - lows, highs - rates], 0, None)  # float rounding at rates of 0 or 1
            ax.bar(x, rates, width, yerr=errors, capsize=3, label=row["label"])
        for i, name in enumerate(attributes):
            ax.hlines(report["chance"][name], i - 0.45, i + 0.45, colors="black", linestyles="--")
        ax.plot([], [], "k--", label="chance")
        ax.set_xticks(range(len(attributes)), list(attributes))
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("agreement")
        ax.set_title(entry["extractor"])
        ax.legend(fontsize="small", loc="upper right")
    figure.tight_layout()
    return _png(figure)


def distance_figure(report: dict) -> bytes:
    """Median relative distance versus network evaluations per image, one point per (extractor, row).

    Colour: extractor; marker: row; hollow: unguided.
    """
    figure = Figure(figsize=(7.5, 4))
    ax = figure.subplots()
    for color, entry in enumerate(report["extractors"]):
        for j, row in enumerate(entry["rows"]):
            ax.scatter(
                row["network_evaluations_per_image"],
                row["relative_distance"]["median"],
                marker=MARKERS[j % len(MARKERS)],
                edgecolors=f"C{color}",
                facecolors=f"C{color}" if row["guided"] else "none",
                label=f"{entry['extractor']}: {row['label']}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations per image (log)")
    ax.set_ylabel("relative feature distance (median, log)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.tight_layout()
    return _png(figure)


def samples_figure(targets: np.ndarray, decoded: dict[tuple[str, str], np.ndarray]) -> bytes:
    """The first targets over the decoded best images of every (extractor, row), uint8 (B, H, W, 3)."""
    strips = [("targets", targets)] + [(f"{spec}\n{label}", images) for (spec, label), images in decoded.items()]
    shown = min(SAMPLES_SHOWN, len(targets))
    figure = Figure(figsize=(0.8 * shown + 2.2, 0.85 * len(strips)))
    for ax, (label, images) in zip(figure.subplots(len(strips), 1, squeeze=False)[:, 0], strips, strict=True):
        ax.imshow(np.concatenate(list(images[:shown]), axis=1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    return _png(figure)


def grid_figure(targets: np.ndarray, decoded: dict[tuple[str, str], np.ndarray]) -> bytes:
    """One column per target (the first ``SAMPLES_SHOWN``), one row per (extractor, method), the targets first."""
    strips = [("target", targets)] + [(f"{spec}\n{label}", images) for (spec, label), images in decoded.items()]
    shown = min(SAMPLES_SHOWN, len(targets))
    figure = Figure(figsize=(0.75 * shown + 2.4, 0.8 * len(strips)))
    axes = figure.subplots(len(strips), shown, squeeze=False)
    for r, (label, images) in enumerate(strips):
        for c in range(shown):
            ax = axes[r, c]
            ax.imshow(images[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{c}", fontsize="small")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    figure.subplots_adjust(wspace=0.05, hspace=0.08)
    return _png(figure)


def unit_grid_figure(columns: list[str], strips: list[tuple[str, list[np.ndarray]]]) -> bytes:
    """``bench visualize``'s grid: one column per unit (class logit or neuron, titled ``columns``), one row per
    method (``strips``: its label and one uint8 image (H, W, 3) per unit)."""
    figure = Figure(figsize=(0.8 * len(columns) + 1.6, 0.85 * len(strips) + 0.3))
    axes = figure.subplots(len(strips), len(columns), squeeze=False)
    for r, (label, images) in enumerate(strips):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c].replace("neuron ", "n"), fontsize="small")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    figure.subplots_adjust(wspace=0.05, hspace=0.08)
    return _png(figure)
