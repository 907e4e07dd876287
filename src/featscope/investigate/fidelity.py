"""Is a counterfactual minimal, and did the inversion it starts from hold the image? (issue #32)

**Minimality** (world images only, where the oracle reads every attribute): the oracle reads the image and the
result; ``changed`` lists the attributes that differ. A counterfactual toward a class is *minimal* when the only
attribute that changed is the class's own (``shape`` for a shape class); a neuron counterfactual, which has no
intended attribute, when at most one attribute changed. An unreadable result (no single clear object) is not
minimal; the share of each attribute changed counts the readable results.

**Reconstruction fidelity**: every inversion-based method regenerates the image from its inversion before it
edits it; the pixel L2 (RMS, [0, 1] units) of that reconstruction to the image is recorded and compared with the
backbone family's threshold (``max_reconstruction_l2`` of its ``inversion`` settings; the world's was chosen on
its tuning split, docs/investigate.md). Above it, or (world images) when the oracle already reads a changed
attribute in the reconstruction or cannot read it, the reconstruction is *poor*: part of the result's change is
the inversion's.

**Verdict**: ``clean`` only for a result that flipped (and, on the world, is minimal) from a reconstruction that
is not poor; otherwise the reasons, e.g. ``also changed color; poor reconstruction (L2 0.209, size changed)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from featscope.world.readout import compare
from featscope.world.render import ATTRIBUTES

CHANGE_RULE = {True: "only the intended attribute changed", False: "at most one attribute changed"}


def is_world(spec: str) -> bool:
    """Whether a backbone spec makes world images (which the oracle reads)."""
    return spec.startswith("world:")


def intended_attribute(class_name: str) -> str | None:
    """The world attribute a class name is a value of (``square`` -> ``shape``, ``red`` -> ``color``), else None."""
    return next((name for name, values in ATTRIBUTES.items() if class_name in values), None)


def minimality(
    image: torch.Tensor, result: torch.Tensor, intended: str | None, target: str | None = None
) -> dict | None:
    """The oracle's readings of ``image`` and ``result`` (1, 3, H, W) and which attributes changed; None where the
    image is not a readable world image. ``intended``: the attribute meant to change (None: a neuron's edit)."""
    reading = compare(image.cpu(), result.cpu())[0]
    if reading is None:
        return None
    changed = sorted(reading["changed"]) if reading["valid"] else []
    if intended is not None:
        minimal = reading["valid"] and changed == [intended]
    else:
        minimal = reading["valid"] and len(changed) <= 1
    record = {
        "image": reading["target"],
        "result": reading["decoded"],
        "readable": reading["valid"],
        "reason": reading["reason"],
        "changed": changed,
        "intended": intended,
        "minimal": bool(minimal),
        "rule": CHANGE_RULE[intended is not None],
    }
    if intended is not None and target is not None:
        record["reads_target"] = bool(reading["valid"] and reading["decoded"][intended] == target)
    return record


def reconstruction(image: torch.Tensor, regenerated: torch.Tensor, threshold: float | None, world: bool = True) -> dict:
    """The inversion's reconstruction error (pixel L2, RMS) against ``threshold`` (None: no threshold); on world
    images (``world``) also the attributes the oracle reads changed in the reconstruction. ``poor``: above the
    threshold, or an attribute already changed."""
    l2 = float((regenerated.float().cpu() - image.float().cpu()).pow(2).mean().sqrt())
    reading = compare(image.cpu(), regenerated.cpu())[0] if world else None
    readable = None if reading is None else reading["valid"]
    changed = None if reading is None else sorted(reading["changed"]) if readable else []
    return {
        "l2": l2,
        "threshold": threshold,
        "readable": readable,
        "changed": changed,
        "poor": (threshold is not None and l2 > threshold) or bool(changed) or readable is False,
    }


def reconstruction_threshold(spec: str) -> float | None:
    """The backbone family's threshold of the inversion's reconstruction L2 (None where it registered none)."""
    from featscope.registry import backbone_settings

    value = backbone_settings(spec, "inversion").get("max_reconstruction_l2")
    return None if value is None else float(value)


def verdict(flipped: bool | None, change: dict | None, recon: dict, missed: str = "not flipped") -> str:
    """``clean``, or why not: ``not flipped``, ``unreadable result``, ``also changed color``, ``poor
    reconstruction``."""
    reasons = []
    if flipped is False:
        reasons.append(missed)
    if change is not None and not change["minimal"]:
        if not change["readable"]:
            reasons.append("unreadable result")
        else:
            extra = [name for name in change["changed"] if name != change["intended"]]
            reasons.append(f"also changed {', '.join(extra)}" if extra else f"{change['intended']} unchanged")
    if recon["poor"]:
        changed = f", {', '.join(recon['changed'])} changed" if recon["changed"] else ""
        changed += ", unreadable" if recon["readable"] is False else ""
        reasons.append(f"poor reconstruction (L2 {recon['l2']:.3f}{changed})")
    return "; ".join(reasons) or "clean"


def checks(image, regenerated, result, spec: str, *, intended: str | None, target: str | None, flipped: bool | None,
           item_id: str = "", say: bool = False, missed: str = "not flipped") -> dict:  # fmt: skip
    """An item's ``minimality`` (world only, else None), ``reconstruction`` and ``verdict`` for metrics.json;
    with ``say``, prints one line when the reconstruction is poor (:func:`warning`; also under ``--quiet``, which
    silences progress, not doubts about a result)."""
    change = minimality(image, result, intended, target) if is_world(spec) else None
    recon = reconstruction(image, regenerated, reconstruction_threshold(spec), is_world(spec))
    if say:
        say_poor(item_id, recon)
    return {"minimality": change, "reconstruction": recon, "verdict": verdict(flipped, change, recon, missed)}


def warning(item_id: str, recon: dict) -> str | None:
    """The one line said of an item whose reconstruction is poor (:func:`reconstruction`), else None."""
    if not recon["poor"]:
        return None
    limit = f" (threshold {recon['threshold']:g})" if recon["threshold"] is not None else ""
    changed = f", it already changes {', '.join(recon['changed'])}" if recon["changed"] else ""
    changed += ", the oracle cannot read it" if recon["readable"] is False else ""
    return (f"{item_id}: the inversion does not hold the image: reconstruction L2 {recon['l2']:.3f}{limit}{changed}; "
            "the result is not a clean counterfactual")  # fmt: skip


def say_poor(item_id: str, recon: dict) -> None:
    """Print :func:`warning`'s line (``featscope: warning: ...``) when the reconstruction is poor."""
    line = warning(item_id, recon)
    if line is not None:
        print(f"featscope: warning: {line}", flush=True)


def aggregate(results: Mapping[str, dict]) -> dict:
    """Over the items' metrics: shares (95% Wilson intervals) of minimal results, of each attribute changed, of
    poor reconstructions and of clean verdicts."""
    from featscope.bench.stats import proportion  # featscope.bench imports the backbones: only when summarising

    metrics = [m for m in results.values() if "verdict" in m]
    if not metrics:
        return {}
    read = [m["minimality"] for m in metrics if m.get("minimality") is not None]
    recons = [m["reconstruction"] for m in metrics]
    checked = [r for r in recons if r["threshold"] is not None or r["changed"] is not None]
    summary = {"clean": proportion(sum(m["verdict"] == "clean" for m in metrics), len(metrics))}
    if checked:
        summary["poor_reconstruction"] = proportion(sum(r["poor"] for r in checked), len(checked))
    if read:
        summary["minimal"] = proportion(sum(r["minimal"] for r in read), len(read))
        summary["rule"] = read[0]["rule"]
        summary["unreadable"] = proportion(sum(not r["readable"] for r in read), len(read))
        readable = [r for r in read if r["readable"]]
        changed = {name: sum(name in r["changed"] for r in readable) for name in ATTRIBUTES}
        summary["changed"] = {name: proportion(count, len(readable)) for name, count in changed.items()}
    return summary


def aggregate_lines(summary: dict) -> list[str]:
    """summary.md's lines for :func:`aggregate` (rate [95% interval] (k/n))."""
    from featscope.bench.stats import format_proportion

    if not summary:
        return []

    def rate(entry: dict) -> str:
        return f"{format_proportion(entry)} ({entry['successes']}/{entry['total']})"

    lines = [f"- clean (flipped, minimal, reconstruction held): {rate(summary['clean'])}"]
    if "poor_reconstruction" in summary:
        lines.append(f"- reconstruction above the threshold: {rate(summary['poor_reconstruction'])}")
    else:
        lines.append("- reconstruction: not checked (no threshold for this backbone family)")
    if "minimal" in summary:
        lines.append(f"- minimal ({summary['rule']}, the oracle's reading): {rate(summary['minimal'])}")
        lines.append(f"- unreadable results (no single clear object): {rate(summary['unreadable'])}")
        lines.append("- changed, of the readable results: "
                     + ", ".join(f"{k} {rate(v)}" for k, v in summary["changed"].items()))  # fmt: skip
    return lines


def summarise(results: Mapping[str, dict]) -> tuple[dict, list[str]]:
    """The run's ``aggregate`` (summary.json) and its lines (summary.md, printed): :func:`aggregate`."""
    summary = aggregate(results)
    return summary, aggregate_lines(summary)
