"""Measure the investigation methods on the world, where every attribute of every image is known.

Three measurements, one per use case of the end-to-end solver (issue #5's acceptance):

- ``counterfactual``: world images of one shape are null-text inverted with their captions and pushed to
  another shape of ``world:shape-net``, with and without the background regularisers; the rate at which the
  target class passes 0.5, and the change of the true background pixels (the renderer knows them).
- ``difference``: for every shape, images that ``world:shape-net`` calls that shape and ``world:spurious-net``
  does not; the oracle then reads their colour, to see whether the disagreement comes from the colour
  shortcut spurious-net was trained with.
- ``neuron``: images that raise a channel of the penultimate layer: the activation over the plain sample's
  and over the channel's mean on 512 held-out images.

Each calls the cores users run (:mod:`featscope.investigate.cores`), in batches.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.bench.run import check_out, machine
from featscope.bench.stats import format_proportion, proportion
from featscope.bench.targets import DEFAULT_SPLIT, TargetSource
from featscope.devices import peak_memory_mb, resolve_device
from featscope.errors import FeatscopeError
from featscope.extractors import load_extractor
from featscope.images import save_image, to_tensor
from featscope.investigate import cores, fidelity
from featscope.investigate.common import FLIP
from featscope.investigate.masks import foreground_mask, parse_mask
from featscope.investigate.wordswap import word_swap_core
from featscope.objectives import activation, last_linear
from featscope.progress import tqdm
from featscope.runs import atomic_write_json, atomic_write_text
from featscope.solvers.configs import EndToEndConfig, WordSwapConfig, endtoend_defaults
from featscope.world.oracle import read_batch
from featscope.world.render import COLORS, SHAPES, object_mask

METHODS = ("counterfactual", "word-swap", "difference", "neuron")
RESULTS = "results.json"
HELD_OUT_IMAGES = 512  # the split's images over which a neuron's mean activation is taken
# counterfactual rows: (regularizers, weights, foreground mask): "object" is the renderer's true object mask,
# a mask spec (``cross-attention:otsu``) is made from each image's inversion as `featscope investigate
# counterfactual --mask SPEC` makes it, None counts the whole image as background
ROWS = {
    "no regulariser": ((), (), "object"),
    "background regularisers": (cores.PUBLISHED_REGULARIZERS, cores.PUBLISHED_WEIGHTS, "object"),
    "background regularisers, no mask": (cores.PUBLISHED_REGULARIZERS, cores.PUBLISHED_WEIGHTS, None),
    "background regularisers, cross-attention mask": (
        cores.PUBLISHED_REGULARIZERS, cores.PUBLISHED_WEIGHTS, "cross-attention:otsu"
    ),
}
SHORTCUT_COLOR = {shape: color for shape, color in zip(SHAPES, COLORS, strict=False)}  # spurious-net's training


def _config(settings: dict, backbone: str, method: str | None = None) -> EndToEndConfig:
    """The backbone's defaults for ``method`` (what ``featscope investigate`` runs with) with ``settings`` on top."""
    config = endtoend_defaults(backbone, method).with_overrides(**settings)
    config.validate()
    return config


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def _probs(net, images: torch.Tensor) -> torch.Tensor:
    device = next(net.parameters()).device
    return net.network(net.preprocess(images.to(device))).float().softmax(1).cpu()


def save_grid(images: torch.Tensor, path: Path) -> None:
    """Up to 32 images in rows of 8, one PNG."""
    images = images[:32]
    rows = [torch.cat(list(images[i : i + 8]), dim=2) for i in range(0, len(images), 8)]
    width = max(r.shape[2] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[2])) for r in rows]
    save_image(torch.cat(rows, dim=1), path)


def _row_mask(mask: str | None, true_masks, backbone, images, inverted, captions, start, config) -> torch.Tensor | None:
    """A row's foreground masks (B, 1, H, W): the true object masks, generated ones (``mask`` a spec), or None."""
    if mask is None:
        return None
    if mask == "object":
        return true_masks
    spec = parse_mask(mask)
    x_t, nulls = inverted
    found = [foreground_mask(spec, backbone, images[i : i + 1], x_t[i : i + 1], captions[i], start,
                             null_texts=nulls[:, i : i + 1], guidance_scale=config.guidance_scale)[1]
             for i in range(len(images))]  # fmt: skip
    return torch.cat(found)


def fidelity_row(backbone, images: torch.Tensor, regenerated: torch.Tensor, results: torch.Tensor,
                 flipped: Sequence[bool], target: str) -> dict:  # fmt: skip
    """Minimality and reconstruction fidelity of a row's results, as ``featscope investigate`` records them per item
    (:func:`featscope.investigate.fidelity.checks`), in shares with 95% intervals; per image in ``items``."""
    items = {
        str(i): fidelity.checks(images[i : i + 1], regenerated[i : i + 1], results[i : i + 1], backbone.spec,
                                intended=fidelity.intended_attribute(target), target=target, flipped=bool(flipped[i]))
        for i in range(len(images))
    }  # fmt: skip
    row = fidelity.aggregate(items)
    row["reconstruction_l2_mean"] = float(np.mean([m["reconstruction"]["l2"] for m in items.values()]))
    row["items"] = [{"changed": m["minimality"] and m["minimality"]["changed"], "verdict": m["verdict"],
                     "reconstruction_l2": m["reconstruction"]["l2"]} for m in items.values()]  # fmt: skip
    return row


def _inversion(backbone, images: torch.Tensor, captions: list[str], config, cache: dict, key) -> tuple:
    """The null-text inversion of a batch (as investigate makes it), once per ``key`` in ``cache``."""
    if key not in cache:
        cache[key] = cores.null_inversion(backbone, images, captions, num_steps=config.num_steps,
                                          guidance_scale=config.guidance_scale)  # fmt: skip
    return cache[key]


def counterfactual_bench(
    backbone,
    net,
    *,
    n: int,
    source: TargetSource,
    start: str,
    target: str,
    config: EndToEndConfig,
    batch: int,
    out: Path,
    quiet: bool,
    rows: Sequence[str] = tuple(ROWS),
    inversions: dict | None = None,
) -> dict:
    """Counterfactuals ``start`` -> ``target`` of ``n`` world images, one optimisation per row of :data:`ROWS`
    (without regularisers; with the background regularisers outside the true object; with them and no mask).
    ``inversions`` caches the null-text inversions (shared with :func:`word_swap_bench`)."""
    arrays, records = source.images(n, shape=start)
    seed = source.noise_seed
    images = to_tensor(arrays)
    masks = torch.from_numpy(np.stack([object_mask(r) for r in records]))[:, None]
    y = net.labels.index(target)
    settings = {name: ROWS[name] for name in rows}
    results = {name: [] for name in settings}
    cache = {} if inversions is None else inversions
    for part in tqdm(_batches(n, batch), desc="counterfactual", disable=quiet):
        idx = list(part)
        captions = [records[i].caption() for i in idx]
        inverted = _inversion(backbone, images[idx], captions, config, cache, (start, tuple(idx)))
        for name, (regularizers, weights, mask) in settings.items():
            result = cores.counterfactual(
                backbone, net, images[idx], start, target, seeds=[seed + i for i in idx], prompts=captions,
                regularizers=regularizers, regularizer_weights=weights,
                mask=_row_mask(mask, masks[idx], backbone, images[idx], inverted, captions, start, config),
                inverted=inverted, config=config,
            )  # fmt: skip
            results[name].append((result.images[0], result.best))
    rows = {}
    for name, parts in results.items():
        plain = torch.cat([p for p, _ in parts])
        best = torch.cat([b for _, b in parts])
        conf = _probs(net, best)[:, y]
        background = 1 - masks
        change = ((best - images).abs() * background).sum((1, 2, 3)) / (3 * background.sum((1, 2, 3)))
        plain_change = ((plain - images).abs() * background).sum((1, 2, 3)) / (3 * background.sum((1, 2, 3)))
        readings = read_batch(best)
        rows[name] = {
            "target_confidence_above_0.5": proportion(int((conf > 0.5).sum()), n),
            "target_confidence_mean": float(conf.mean()),
            "start_confidence_of_inversion_mean": float(_probs(net, plain)[:, net.labels.index(start)].mean()),
            "oracle_reads_target_shape": proportion(sum(r.valid and r.shape == target for r in readings), n),
            "background_change_mean_abs": float(change.mean()),
            "background_change_of_inversion_mean_abs": float(plain_change.mean()),
            **fidelity_row(backbone, images, plain, best, (conf > FLIP).tolist(), target),
        }
        save_grid(best, out / f"counterfactual-{name.replace(',', '').replace(' ', '-')}.png")
    save_grid(images, out / "counterfactual-start.png")
    return {"start": start, "target": target, "n": n, "rows": rows}


def word_swap_bench(backbone, net, *, n: int, source: TargetSource, start: str, target: str, config: EndToEndConfig,
                    out: Path, quiet: bool, batch: int = 8, inversions: dict | None = None) -> dict:  # fmt: skip
    """Word-swap counterfactuals ``start`` -> ``target`` of the same ``n`` world images as
    :func:`counterfactual_bench` (their captions, the same inversions), at :class:`WordSwapConfig`'s defaults."""
    arrays, records = source.images(n, shape=start)
    images = to_tensor(arrays)
    masks = torch.from_numpy(np.stack([object_mask(r) for r in records]))[:, None]
    swap_config = WordSwapConfig(num_steps=config.num_steps, guidance_scale=config.guidance_scale)
    cache = {} if inversions is None else inversions
    best, regenerated, flipped, taus = [], [], [], []
    for part in tqdm(_batches(n, batch), desc="word swap", disable=quiet):
        idx = list(part)
        captions = [records[i].caption() for i in idx]
        inverted = _inversion(backbone, images[idx], captions, config, cache, (start, tuple(idx)))
        result = word_swap_core(backbone, net, images[idx], start, target, prompts=captions, inverted=inverted,
                                config=swap_config)  # fmt: skip
        best.append(result.best)
        regenerated.append(result.reconstruction)
        flipped += result.flipped
        taus += result.chosen_tau
    best, regenerated = torch.cat(best), torch.cat(regenerated)
    background = 1 - masks
    change = ((best - images).abs() * background).sum((1, 2, 3)) / (3 * background.sum((1, 2, 3)))
    readings = read_batch(best)
    save_grid(best, out / "word-swap.png")
    row = {
        "target_confidence_above_0.5": proportion(sum(flipped), n),
        "oracle_reads_target_shape": proportion(sum(r.valid and r.shape == target for r in readings), n),
        "background_change_mean_abs": float(change.mean()),
        "chosen_tau_counts": {f"{t:g}": taus.count(t) for t in sorted(set(taus))},
        **fidelity_row(backbone, images, regenerated, best, flipped, target),
    }
    return {"start": start, "target": target, "n": n, "solver": swap_config.to_dict(), "rows": {"word swap": row}}


def _shortcut_selection(first, second, y: int, images: torch.Tensor) -> tuple[int, int]:
    """(images ``first`` calls class ``y`` and ``second`` does not, those of them whose oracle colour is the
    shortcut colour of the shape ``second`` predicts)."""
    p1, p2 = _probs(first, images), _probs(second, images)
    chosen = ((p1.argmax(1) == y) & (p2.argmax(1) != y)).tolist()
    says = [second.labels[int(i)] for i in p2.argmax(1)]
    colors = [r.color if r.valid else None for r in read_batch(images)]
    follows = [d and c is not None and c == SHORTCUT_COLOR.get(s) for c, s, d in zip(colors, says, chosen, strict=True)]
    return sum(chosen), sum(follows)


def selection_baseline(backbone, first, second, *, samples: int, seed: int, config: EndToEndConfig) -> dict:
    """The difference bench's selection applied to unguided samples: per shape, ``samples`` plain samples of its
    prompt (the solver's iteration 0, seeds ``seed + 1000 * y + k``), kept where ``first`` says the shape and
    ``second`` does not; how many are kept and how many of those carry the shortcut colour of the shape ``second``
    predicts. A shortcut reading of the guided images counts only above this rate."""
    plain = config.with_overrides(iterations=0)
    kept = follows = 0
    for y, shape in enumerate(first.labels):
        seeds = [seed + 1000 * y + k for k in range(samples)]
        images = cores.difference(backbone, first, second, shape, seeds=seeds, prompt=shape, config=plain).images[0]
        k, f = _shortcut_selection(first, second, y, images)
        kept, follows = kept + k, follows + f
    total = samples * len(first.labels)
    return {
        "samples_per_class": samples,
        "seed": seed,
        "disagreement": proportion(kept, total),
        "disagreeing_color_of_second_prediction": proportion(follows, kept),
    }


def difference_bench(
    backbone,
    first,
    second,
    *,
    samples: int,
    seed: int,
    config: EndToEndConfig,
    out: Path,
    quiet: bool,
    baseline_samples: int = 0,
) -> dict:
    """Per shape, images ``first`` sees as the shape and ``second`` does not; the oracle reads their colour.
    With ``baseline_samples``, the same selection on that many unguided samples per shape (from seeds the
    guided samples do not use) is the baseline of the shortcut reading (:func:`selection_baseline`)."""
    per_class, images_all = {}, []
    for y, shape in enumerate(tqdm(first.labels, desc="difference", disable=quiet)):
        result = cores.difference(backbone, first, second, shape, seeds=[seed + 1000 * y + k for k in range(samples)],
                                  prompt=shape, loss="conf", config=config)  # fmt: skip
        plain, best = result.images[0], result.best
        p1, p2 = _probs(first, best), _probs(second, best)
        disagree = (p1.argmax(1) == y) & (p2.argmax(1) != y)
        readings = read_batch(best)
        colors = [r.color if r.valid else None for r in readings]
        second_says = [second.labels[int(i)] for i in p2.argmax(1)]
        chosen = disagree.tolist()
        off_shortcut = [d and c is not None and c != SHORTCUT_COLOR[shape] for c, d in zip(colors, chosen, strict=True)]
        follows = [d and c is not None and c == SHORTCUT_COLOR.get(s)
                   for c, s, d in zip(colors, second_says, chosen, strict=True)]  # fmt: skip
        plain_p1, plain_p2 = _probs(first, plain), _probs(second, plain)
        plain_colors = [r.color if r.valid else None for r in read_batch(plain)]
        per_class[shape] = {
            "disagree": int(disagree.sum()),
            "disagree_plain": int(((plain_p1.argmax(1) == y) & (plain_p2.argmax(1) != y)).sum()),
            "confidence_first_mean": float(p1[:, y].mean()),
            "confidence_second_mean": float(p2[:, y].mean()),
            "confidence_second_plain_mean": float(plain_p2[:, y].mean()),
            "disagreeing_off_shortcut_color": sum(off_shortcut),
            "disagreeing_color_of_second_prediction": sum(follows),
            "plain_off_shortcut_color": sum(c is not None and c != SHORTCUT_COLOR[shape] for c in plain_colors),
            "colors": colors,
            "second_predicts": second_says,
        }
        images_all.append(best)
    save_grid(torch.cat(images_all), out / "difference.png")
    total = len(first.labels) * samples
    disagree = sum(c["disagree"] for c in per_class.values())
    return {
        "first": first.name,
        "second": second.name,
        "samples_per_class": samples,
        "classes_with_disagreement": sum(c["disagree"] > 0 for c in per_class.values()),
        "classes": len(first.labels),
        "disagreement": proportion(disagree, total),
        "disagreement_plain": proportion(sum(c["disagree_plain"] for c in per_class.values()), total),
        "disagreeing_off_shortcut_color": proportion(
            sum(c["disagreeing_off_shortcut_color"] for c in per_class.values()), disagree
        ),
        "disagreeing_color_of_second_prediction": proportion(
            sum(c["disagreeing_color_of_second_prediction"] for c in per_class.values()), disagree
        ),
        "plain_off_shortcut_color": proportion(sum(c["plain_off_shortcut_color"] for c in per_class.values()), total),
        "selection_baseline": selection_baseline(backbone, first, second, samples=baseline_samples,
                                                 seed=seed + 500, config=config) if baseline_samples else None,
        "per_class": per_class,
    }  # fmt: skip


@torch.no_grad()
def channel_means(net, images: torch.Tensor, channels: Sequence[int]) -> list[float]:
    """Mean activation of ``channels`` of the penultimate layer over ``images`` (held-out world images)."""
    device = next(net.parameters()).device
    acts = activation(net.network, net.preprocess(images.to(device)), last_linear(net.network), True).float()
    return [float(acts[:, c].mean()) for c in channels]


def neuron_bench(
    backbone, net, *, channels: Sequence[int], samples: int, seed: int, config: EndToEndConfig, out: Path, quiet: bool,
    held_out: torch.Tensor | None = None,
) -> dict:  # fmt: skip
    """Maximise each channel of the penultimate layer from ``samples`` plain samples. Two gains: over the plain
    sample (the ratio; it explodes when the sample barely fires the channel and stalls when it already fires it
    strongly) and over the channel's mean activation on ``held_out`` images (scale-free, the bar's measure)."""
    per_channel, images_all = {}, []
    for c in tqdm(channels, desc="neuron", disable=quiet):
        result = cores.neuron(backbone, net, c, seeds=[seed + k for k in range(samples)], prompt="", config=config)
        losses = result.solver.losses  # minus the activation, without augmentation
        before, after = -losses[0], -losses.gather(0, result.solver.best_iteration[None])[0]
        per_channel[int(c)] = {"before": before.tolist(), "after": after.tolist()}
        images_all.append(torch.stack([result.images[0], result.best], 1).flatten(0, 1))
    save_grid(torch.cat(images_all), out / "neuron.png")
    before = torch.tensor([v for c in per_channel.values() for v in c["before"]])
    after = torch.tensor([v for c in per_channel.values() for v in c["after"]])
    ratio = after / before.clamp_min(1e-6)
    gains = {}
    if held_out is not None:
        means = channel_means(net, held_out, list(per_channel))
        for entry, mean in zip(per_channel.values(), means, strict=True):
            entry["held_out_mean"] = mean
        gain = torch.tensor([a / max(c["held_out_mean"], 1e-6) for c in per_channel.values() for a in c["after"]])
        gains = {"held_out_images": len(held_out), "gain_over_held_out_mean_median": float(gain.median()),
                 "gain_over_held_out_mean_at_least_3": proportion(int((gain >= 3).sum()), len(gain))}  # fmt: skip
    return {
        "network": net.name,
        "layer": "input of the last linear layer",
        "channels": [int(c) for c in channels],
        "samples_per_channel": samples,
        "activation_before_mean": float(before.mean()),
        "activation_after_mean": float(after.mean()),
        "ratio_median": float(ratio.median()),
        "ratio_at_least_3": proportion(int((ratio >= 3).sum()), len(ratio)),
        **gains,
        "per_channel": per_channel,
    }


def run_investigation_bench(
    out: str | Path,
    methods: Sequence[str] = METHODS,
    *,
    n: int = 32,
    split: str | None = DEFAULT_SPLIT,
    seed: int | None = None,
    backbone: str = "world:ddpm",
    batch: int = 8,
    channels: Sequence[int] = (0, 1, 2, 3),
    rows: Sequence[str] = tuple(ROWS),
    device: str = "auto",
    quiet: bool = False,
    overwrite: bool = False,
    **settings,
) -> dict:
    """Run the chosen investigation measurements on the world and write results.json and results.md to ``out``.

    ``n`` is the number of counterfactual images (from the evaluation ``split``, or ``seed``'s stream; see
    :class:`~featscope.bench.targets.TargetSource`), and the number of difference samples per shape and neuron
    samples per neuron (each of ``channels``) is ``max(1, n // 8)``; ``rows``: the counterfactual rows of
    :data:`ROWS` (word swap starts from the same inversions). ``settings`` override the backbone's end-to-end
    defaults (:func:`~featscope.solvers.configs.endtoend_defaults`).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise FeatscopeError(f"unknown investigation method(s) {unknown}; choose from {', '.join(METHODS)}")
    bad_rows = [r for r in rows if r not in ROWS]
    if bad_rows or not rows:
        raise FeatscopeError(f"unknown counterfactual row(s) {bad_rows}; choose from: {'; '.join(ROWS)}")
    config = _config(settings, backbone)
    out = Path(out)
    check_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    model = load_backbone(backbone, device=torch_device)
    shape_net = load_extractor("world:shape-net", device=torch_device)
    source = TargetSource(split, seed)
    seed = source.noise_seed
    report: dict = {"config": {"n": n, **source.record(), "backbone": backbone, "solver": asdict(config)},
                    "machine": machine(), "results": {}}  # fmt: skip
    small = max(1, n // 8)
    inversions: dict = {}
    for method in methods:
        tic = time.time()
        if method == "counterfactual":
            entry = counterfactual_bench(model, shape_net, n=n, source=source, start="circle", target="square",
                                         config=config, batch=batch, out=out, quiet=quiet, rows=rows,
                                         inversions=inversions)  # fmt: skip
        elif method == "word-swap":
            entry = word_swap_bench(model, shape_net, n=n, source=source, start="circle", target="square",
                                    config=config, batch=batch, out=out, quiet=quiet,
                                    inversions=inversions)  # fmt: skip
        elif method == "difference":
            spurious = load_extractor("world:spurious-net", device=torch_device)
            entry = difference_bench(model, shape_net, spurious, samples=small, seed=seed, config=config, out=out,
                                     quiet=quiet, baseline_samples=n)  # fmt: skip
        else:
            held_out = to_tensor(source.images(HELD_OUT_IMAGES)[0])
            neuron_config = _config(settings, backbone, "neuron")
            entry = neuron_bench(model, shape_net, channels=channels, samples=small, seed=seed, config=neuron_config,
                                 out=out, quiet=quiet, held_out=held_out)  # fmt: skip
            entry["solver"] = asdict(neuron_config)  # the neurons' own defaults (more iterations on the world)
        entry["seconds"] = time.time() - tic
        entry["peak_memory_mb"] = peak_memory_mb(torch_device)
        report["results"][method] = entry
        atomic_write_json(out / RESULTS, report)
    atomic_write_text(out / "results.md", investigation_markdown(report))
    return report


def _rate(entry: dict) -> str:
    return f"{format_proportion(entry)} ({entry['successes']}/{entry['total']})"


def _cost(entry: dict, images: int) -> str:
    """Wall time, throughput and peak memory of one measurement (``images`` optimised images in all)."""
    per_hour = images * 3600 / max(entry["seconds"], 1e-9)
    return (
        f"\n{entry['seconds']:.0f} s in all: {images} optimised images, {per_hour:.0f} images per hour, "
        f"peak memory {entry.get('peak_memory_mb', float('nan')):.0f} MB."
    )


def _fidelity_table(rows: dict) -> list[str]:
    """Minimality and reconstruction per row: shares with 95% intervals (:func:`fidelity_row`)."""
    lines = ["| setting | minimal (only shape changed) | clean (flipped, minimal, reconstruction held) | "
             "poor reconstruction | unreadable | changed (of the readable): color / size / position / background |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in rows.items():
        changed = " / ".join(_rate(row["changed"][a]) for a in ("color", "size", "position", "background"))
        lines.append(f"| {name} | {_rate(row['minimal'])} | {_rate(row['clean'])} | "
                     f"{_rate(row['poor_reconstruction'])} | {_rate(row['unreadable'])} | {changed} |")  # fmt: skip
    return lines


def investigation_markdown(report: dict) -> str:
    """The results as Markdown tables."""
    lines = [f"# Investigation bench on the world ({report['config']['backbone']})", ""]
    results = report["results"]
    if "counterfactual" in results:
        r = results["counterfactual"]
        lines += [
            f"## Counterfactuals {r['start']} -> {r['target']} (world:shape-net, {r['n']} images)", "",
            "| setting | target conf > 0.5 | mean target conf | oracle reads target | background change | "
            "inversion's background change |",
            "|---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, row in r["rows"].items():
            lines.append(
                f"| {name} | {_rate(row['target_confidence_above_0.5'])} | {row['target_confidence_mean']:.3f} | "
                f"{_rate(row['oracle_reads_target_shape'])} | {row['background_change_mean_abs']:.4f} | "
                f"{row['background_change_of_inversion_mean_abs']:.4f} |"
            )
        lines += ["", *_fidelity_table(r["rows"]), _cost(r, len(r["rows"]) * r["n"]), ""]
    if "word-swap" in results:
        r = results["word-swap"]
        row = r["rows"]["word swap"]
        lines += [
            f"## Word swap {r['start']} -> {r['target']} (world:shape-net, {r['n']} images, the same inversions)", "",
            f"- target conf > 0.5: {_rate(row['target_confidence_above_0.5'])}; oracle reads target: "
            f"{_rate(row['oracle_reads_target_shape'])}; background change {row['background_change_mean_abs']:.4f}; "
            f"chosen tau (images): {row['chosen_tau_counts']}", "",
            *_fidelity_table(r["rows"]), _cost(r, r["n"]), "",
        ]  # fmt: skip
    if "difference" in results:
        r = results["difference"]
        lines += [
            f"## Classifier difference {r['first']} vs {r['second']} ({r['samples_per_class']} per shape)", "",
            f"- shapes with at least one disagreeing image: {r['classes_with_disagreement']} / {r['classes']}",
            f"- disagreement after optimisation: {_rate(r['disagreement'])}; among plain samples: "
            f"{_rate(r['disagreement_plain'])}",
            f"- disagreeing images whose colour is not the shape's shortcut colour: "
            f"{_rate(r['disagreeing_off_shortcut_color'])}",
            f"- disagreeing images whose colour is the shortcut colour of the shape {r['second']} predicts: "
            f"{_rate(r['disagreeing_color_of_second_prediction'])}",
            f"- plain samples off the shortcut colour: {_rate(r['plain_off_shortcut_color'])}",
        ]  # fmt: skip
        b = r.get("selection_baseline")
        if b:
            lines += [
                f"- the same selection on {b['samples_per_class']} unguided samples per shape: kept "
                f"{_rate(b['disagreement'])}; of those, the shortcut colour of the shape {r['second']} predicts: "
                f"{_rate(b['disagreeing_color_of_second_prediction'])}",
            ]
        lines += [_cost(r, r["disagreement"]["total"]), ""]
    if "neuron" in results:
        r = results["neuron"]
        lines += [
            f"## Neurons of {r['network']} ({r['layer']}, channels {r['channels']})", "",
            f"- mean activation: plain sample {r['activation_before_mean']:.3g}, "
            f"after {r['activation_after_mean']:.3g}",
            f"- median ratio after / before: {r['ratio_median']:.2f}; at least 3x: {_rate(r['ratio_at_least_3'])}",
        ]  # fmt: skip
        if "gain_over_held_out_mean_median" in r:
            lines.append(f"- median gain over the channel's mean on {r['held_out_images']} held-out images: "
                         f"{r['gain_over_held_out_mean_median']:.2f}; at least 3x: "
                         f"{_rate(r['gain_over_held_out_mean_at_least_3'])}")  # fmt: skip
        lines += [_cost(r, r["ratio_at_least_3"]["total"]), ""]
    return "\n".join(lines)
