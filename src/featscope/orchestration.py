"""How every method is run: one run folder written whole or not at all (:func:`write_run`, used by decode,
FeatInv and each investigation item); for methods of many items, one folder per item, resume (items whose
``metrics.json`` exists are skipped), sharding over torchrun ranks (item i on rank i % world size), progress lines
and ``summary.json`` / ``summary.md``.

A method of many items describes its run as a :class:`Plan` (its items, and a work function that calls the
method's core and writes one item's files); :func:`run_plan` joins the ranks, builds the plan on this rank's
device and runs this rank's items; :func:`run_item` runs one item into one folder (a study job).
"""

from __future__ import annotations

import functools
import json
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featscope._version import __version__
from featscope.devices import resolve_device
from featscope.errors import FeatscopeError
from featscope.ranks import Ranks, join_ranks, rank_device
from featscope.runs import RunFolder, atomic_write_json, atomic_write_text, make_folder, tidy_claim


@dataclass
class Item:
    """One unit of work: its folder name under ``out/`` and what the method needs to compute it."""

    item_id: str
    payload: Any


def unique_ids(ids: Sequence[str]) -> list[str]:
    """``ids`` with repeats made unique by a ``-2``, ``-3`` ... suffix (first occurrence unchanged)."""
    seen: dict[str, int] = {}
    result = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        result.append(i if seen[i] == 1 else f"{i}-{seen[i]}")
    return result


def write_run(run: RunFolder, config: dict, work: Callable[[RunFolder], dict]) -> tuple[Path, dict]:
    """Write one run folder whole or not at all: claim it, ``config.yaml`` first, then ``work`` (which writes the
    images, sheet.png and log lines and returns the metrics), then ``metrics.json``; the folder is committed in
    place last, or abandoned when anything fails. Returns the folder and the metrics."""
    run.open()
    try:
        run.write_yaml("config.yaml", config)
        metrics = work(run)
        run.write_json("metrics.json", metrics)
        return run.commit(), metrics
    except BaseException:
        run.abandon()
        raise


Work = Callable[[RunFolder, Item], dict]  # writes the item's files into the folder, returns its metrics
Aggregate = Callable[[dict[str, dict]], tuple[dict, list[str]]]  # all items' metrics -> (summary entry, lines)


@dataclass
class Plan:
    """A method's run, ready to go: its items, the work of one item, the config record (config.yaml and the
    summary) and the headline row of an item's metrics (summary.md)."""

    method: str
    items: list[Item]
    work: Work
    record: dict
    headline: Callable[[dict], dict]
    aggregate: Aggregate | None = None


def run_plan(
    build: Callable[[torch.device], Plan],
    *,
    out: str | Path,
    device: str = "auto",
    quiet: bool = False,
    ranks: Ranks | None = None,
) -> dict | None:
    """Build the plan on this rank's device and run this rank's items into ``out`` (:func:`run_items`).
    ``ranks`` None joins torchrun's (``RANK``/``WORLD_SIZE``) for this call; ``Ranks()`` runs every item here."""
    own = ranks is None
    ranks = join_ranks() if ranks is None else ranks
    try:
        plan = build(resolve_device(rank_device(device, ranks)))
        return run_items(out, plan.method, plan.items, plan.work, plan.record, ranks=ranks, headline=plan.headline,
                         quiet=quiet, aggregate=plan.aggregate)  # fmt: skip
    finally:
        if own:
            ranks.close()


def run_item(folder: Path, method: str, item: Item, work: Work, config: dict, *, rank: int = 0) -> dict:
    """Compute one item into ``folder`` atomically (:func:`write_run`, replacing what is there); returns its
    metrics, which also name the item, the method and the wall time."""
    tic = time.time()

    def item_work(run: RunFolder) -> dict:
        metrics = work(run, item)
        metrics = {"item": item.item_id, "method": method, "wall_seconds": round(time.time() - tic, 3), **metrics}
        run.log({"item": item.item_id, "rank": rank, "wall_seconds": metrics["wall_seconds"]})
        return metrics

    record = {"method": method, "item": item.item_id, "featscope": __version__, **config}
    return write_run(RunFolder(folder, overwrite=True), record, item_work)[1]


def run_items(
    out: str | Path,
    method: str,
    items: list[Item],
    work: Work,
    config: dict,
    *,
    ranks: Ranks,
    headline: Callable[[dict], dict],
    quiet: bool = False,
    aggregate: Aggregate | None = None,
) -> dict | None:
    """Compute this rank's items not done yet (no ``metrics.json``), each into its own atomic folder, then
    (rank 0, after a barrier) write ``summary.json`` and ``summary.md`` over all items. ``work`` writes the
    item's files and returns its metrics; ``aggregate`` adds totals over the items to the summary. Returns the
    summary on rank 0, None elsewhere."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FeatscopeError(f"output path {str(out)!r} is a file; choose a folder with --out")
    make_folder(out)
    for index, item in enumerate(items):
        if not ranks.mine(index):
            continue
        folder = out / item.item_id
        if (folder / "metrics.json").is_file():
            tidy_claim(folder)
            _say(f"[rank {ranks.rank}] {item.item_id}: already done, skipped", quiet)
            continue
        tic = time.time()
        run_item(folder, method, item, work, config, rank=ranks.rank)
        _say(f"[rank {ranks.rank}] {item.item_id}: done in {time.time() - tic:.1f} s", quiet)
    ranks.barrier()
    if ranks.rank != 0:
        return None
    return write_summary(out, method, items, config, headline, aggregate)


def summary_row(spec: str) -> Callable[[dict], dict]:
    """A method's summary row (one line of summary.md per item) from ``spec``: ``;``-separated
    ``column = dotted.path`` pairs, each path a key path into the item's metrics."""
    columns = [(name.strip(), path.strip().split(".")) for name, _, path in (c.partition("=") for c in spec.split(";"))]

    def row(metrics: dict) -> dict:
        return {name: functools.reduce(operator.getitem, keys, metrics) for name, keys in columns}

    return row


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        print(f"featscope: {text}", flush=True)


def write_summary(out: Path, method: str, items: list[Item], config: dict, headline,
                  aggregate: Aggregate | None = None) -> dict:  # fmt: skip
    """``summary.json`` (every item's metrics, the missing ones, ``aggregate``'s totals) and ``summary.md`` (one
    row per item, then the totals' lines)."""
    done, missing = {}, []
    for item in items:
        path = out / item.item_id / "metrics.json"
        if path.is_file():
            done[item.item_id] = json.loads(path.read_text())
        else:
            missing.append(item.item_id)
    rows = {k: headline(m) for k, m in done.items()}
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    numbers = {c: [r[c] for r in rows.values() if isinstance(r.get(c), (int, float))] for c in columns}
    means = {c: float(np.mean(v)) for c, v in numbers.items() if v}
    summary = {
        "method": method,
        "featscope": __version__,
        "items": len(items),
        "done": len(done),
        "missing": missing,
        "mean": means,
        "config": config,
        "results": done,
    }
    totals, total_lines = aggregate(done) if aggregate is not None and done else ({}, [])
    if totals:
        summary["aggregate"] = totals
    atomic_write_json(out / "summary.json", summary)
    lines = [f"# featscope {method}: {len(done)} of {len(items)} items done", ""]
    if columns:
        lines += ["| item | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for k, row in rows.items():
            lines.append(f"| {k} | " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
        lines.append("| **mean** | " + " | ".join(_cell(means.get(c)) for c in columns) + " |")
    if total_lines:
        lines += ["", *total_lines]
    if missing:
        lines += ["", f"missing (re-run to compute): {', '.join(missing)}"]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return summary


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
