"""A run's curves (distance and gradient norm per step from log.jsonl; losses per iteration) as inline SVG."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featscope.report.folders import Run

MAX_SAMPLES = 6  # curves per panel

Series = dict[str, tuple[list[float], list[float]]]


def panels(run: Run) -> list[tuple[str, str, Series]]:
    """(title, x label, {curve: (xs, ys)}) for every panel the run has data for."""
    found = []
    steps = [r for r in run.log if isinstance(r.get("step"), int)]
    for title, keys in (("feature distance", ("distance", "best_distance")), ("gradient norm", ("grad_norm",))):
        series = _per_sample(steps, keys)
        if series:
            found.append((title, "step", series))
    metrics = run.metrics or {}
    if isinstance(metrics.get("losses"), dict):
        series = {k: (list(range(len(v))), v) for k, v in metrics["losses"].items() if _numbers(v)}
        if _numbers(metrics.get("augmented_losses")):
            values = metrics["augmented_losses"]
            series["total (augmented)"] = (list(range(len(values))), values)
        if series:
            found.append(("loss", "iteration", series))
    return found


def _per_sample(records: list[dict], keys: tuple[str, ...]) -> Series:
    series: Series = {}
    for record in records:
        for key in keys:
            values = record.get(key)
            values = values if isinstance(values, list) else [values]
            for b, value in enumerate(values):
                sample = record.get("first_sample", 0) + b
                if isinstance(value, (int, float)) and sample < MAX_SAMPLES:
                    xs, ys = series.setdefault(f"{key} s{sample}" if len(values) > 1 or sample else key, ([], []))
                    xs.append(record["step"])
                    ys.append(float(value))
    return series


def _numbers(values) -> bool:
    return isinstance(values, list) and bool(values) and all(isinstance(v, (int, float)) for v in values)


def svg(title: str, xlabel: str, series: Series) -> str:
    """One panel as an ``<svg>`` element (text drawn as paths: no fonts needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 2.6))
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, label=name, linewidth=1.2, marker="o" if len(xs) < 12 else None, markersize=3)
    values = [y for _, ys in series.values() for y in ys]
    if values and min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=6)
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
