"""Run the bench: decode world targets with each extractor and preset, and score the decoded images."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from featscope._version import __version__
from featscope.backbones import load_backbone
from featscope.backbones.base import Backbone
from featscope.bench.comparisons import Comparison, Shared, check_comparisons, comparison_settings, run_comparison
from featscope.bench.metrics import background_deviation, pixel_noise
from featscope.bench.report import agreement_figure, distance_figure, grid_figure, markdown, samples_figure
from featscope.bench.stats import chance_levels, median_pair_distance, proportion
from featscope.bench.targets import DEFAULT_SPLIT, TargetSource
from featscope.decoding import decode_features
from featscope.devices import peak_memory_mb, resolve_device, resolve_dtype
from featscope.errors import FeatscopeError, RunExistsError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.images import save_image, to_tensor, to_uint8
from featscope.losses import feature_cosine, feature_loss
from featscope.progress import tqdm
from featscope.runs import atomic_write_bytes, atomic_write_json, atomic_write_text
from featscope.solvers.configs import UniversalConfig, preset
from featscope.world.kinds import DEFAULT_KIND, KINDS, kind_of_size, scene_kind
from featscope.world.oracle import OracleReading, agreement
from featscope.world.render import WorldRecord

PAIRS = 256  # random world image pairs behind the distance normaliser
PAIR_SEED_OFFSET = 10**6  # the pair images' seed is seed + this: never the targets
RESULTS = "results.json"


@dataclass(frozen=True)
class Row:
    """One solver setting of the bench: a preset, guided or not (w_g = 0, the baseline)."""

    preset: str
    guided: bool
    config: UniversalConfig

    @property
    def label(self) -> str:
        return self.preset if self.guided else f"unguided ({self.preset})"

    @property
    def slug(self) -> str:
        return self.preset if self.guided else f"{self.preset}-unguided"

    @property
    def settings(self) -> dict:
        return asdict(self.config)


def bench_rows(presets: Sequence[str], include_unguided: bool, settings: dict) -> list[Row]:
    """Each preset with the overrides, and its unguided twin; invalid settings fail here, before any work."""
    if not presets:
        raise FeatscopeError("no preset given; pass at least one, e.g. --presets fast")
    rows = []
    for name in dict.fromkeys(presets):
        config = preset(name).with_overrides(**settings)
        config.validate()
        rows.append(Row(name, True, config))
        if include_unguided:
            rows.append(Row(name, False, config.unguided()))
    return rows


def spec_slug(spec: str) -> str:
    """A file-name-safe form of a model spec: ``world:shape-net`` -> ``world-shape-net``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", spec).strip("-")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` that is a file, or that holds a bench result unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"output path {str(out)!r} is a file; choose a folder name with --out")
    if (out / RESULTS).exists() and not overwrite:
        raise RunExistsError(
            f"{str(out / RESULTS)!r} already exists; pass --overwrite (overwrite=True) or choose another --out"
        )


def features_of(extractor: Extractor, images: np.ndarray) -> torch.Tensor:
    """Features of uint8 images (B, H, W, 3), measured like real target images, on the CPU."""
    return extractor.target_features(to_tensor(images).to(extractor.mean.device)).float().cpu()


def backbone_kind(backbone: Backbone) -> str:
    """The world scene kind whose images are the backbone's size, or a one-line FeatscopeError."""
    kind = kind_of_size(*backbone.image_size)
    if kind is not None:
        return kind.name
    sizes = ", ".join(f"{kind.name} {kind.image_size} px" for kind in KINDS.values())
    h, w = backbone.image_size
    raise FeatscopeError(
        f"backbone {backbone.spec} makes {h}x{w} px images, and no world scene kind has that size ({sizes}); "
        "bench a backbone of one of those sizes"
    )


def pair_reference(extractor: Extractor, seed: int, kind: str = DEFAULT_KIND) -> float:
    """The distance normaliser: median squared feature distance between random pairs of world images of a kind."""
    images, _ = scene_kind(kind).generate(2 * PAIRS, seed + PAIR_SEED_OFFSET)
    reference = median_pair_distance(features_of(extractor, images))
    if reference <= 0:
        raise FeatscopeError(f"{extractor.name} gives random world images the same feature; no distance scale")
    return reference


def solve(
    backbone: Backbone,
    extractor: Extractor,
    features: torch.Tensor,
    config: UniversalConfig,
    *,
    seeds: list[int],
    dtype: torch.dtype,
    quiet: bool,
) -> tuple[np.ndarray, dict, float, float]:
    """Decode every target in one batch, target ``i`` from seed ``seeds[i]``, with the decode core users run.

    Returns the best images as uint8 (what is saved and scored), the cost per image (network evaluations and
    UNet-forward-equivalents), the wall seconds of the batch and the peak memory (MB).
    """
    output = decode_features(backbone, extractor, features, config, seeds, dtype=dtype, quiet=quiet)
    cost = {"network_evaluations": output.evaluations, "unet_equivalents": output.unet_equivalents}
    return to_uint8(output.best), cost, output.seconds, output.peak_memory_mb


def score_samples(
    decoded: np.ndarray,
    target_features: torch.Tensor,
    records: list[WorldRecord],
    extractor: Extractor,
    reference: float,
    kind: str = DEFAULT_KIND,
) -> list[dict]:
    """Per target: distance, relative distance and cosine of the decoded feature, and the reading of the scene
    kind's oracle."""
    features = features_of(extractor, decoded)
    distances = feature_loss(features, target_features).tolist()
    cosines = feature_cosine(features, target_features).tolist()
    readings = scene_kind(kind).read_batch(decoded)
    noise, background = pixel_noise(decoded).tolist(), background_deviation(decoded).tolist()
    return [
        _sample(i, record, reading, distance, cosine, reference, noise[i], background[i])
        for i, (record, reading, distance, cosine) in enumerate(zip(records, readings, distances, cosines, strict=True))
    ]


def _sample(
    i: int,
    record: WorldRecord,
    reading: OracleReading,
    distance: float,
    cosine: float,
    reference: float,
    noise: float,
    background: float,
) -> dict:
    return {
        "index": i,
        "distance": distance,
        "relative_distance": distance / reference,
        "cosine": cosine,
        "pixel_noise": noise,
        "background_deviation": background,
        "target": record.attributes(),
        "reading": reading.attributes(),
        "valid": reading.valid,
        "reason": reading.reason,
        "agreement": agreement(record.attributes(), reading),
    }


def oracle_summary(samples: list[dict], kind: str = DEFAULT_KIND) -> dict:
    """Valid rate and agreement per attribute of the scene kind, each with its Wilson interval."""
    n = len(samples)
    return {
        "valid": proportion(sum(s["valid"] for s in samples), n),
        "agreement": {
            name: proportion(sum(s["agreement"][name] for s in samples), n) for name in scene_kind(kind).attributes
        },
    }


def summarise_row(
    row: Row | Comparison,
    samples: list[dict],
    cost: dict,
    seconds_per_image: float,
    memory: float,
    folder: str,
    kind: str = DEFAULT_KIND,
) -> dict:
    """The numbers of one (extractor, row): distances, cosine, oracle agreement, cost per image."""
    relative = [s["relative_distance"] for s in samples]
    return {
        "label": row.label,
        "images": folder,
        "preset": row.preset,
        "guided": row.guided,
        "settings": row.settings,
        "relative_distance": {"median": float(np.median(relative)), "mean": float(np.mean(relative))},
        "cosine": {"mean": float(np.mean([s["cosine"] for s in samples]))},
        "pixel_noise": {"median": float(np.median([s["pixel_noise"] for s in samples]))},
        "background_deviation": {"median": float(np.nanmedian([s["background_deviation"] for s in samples]))},
        **oracle_summary(samples, kind),
        "network_evaluations_per_image": cost["network_evaluations"],
        "unet_equivalents_per_image": cost["unet_equivalents"],
        "wall_seconds_per_image": seconds_per_image,
        "peak_memory_mb": round(memory, 1),
        "samples": samples,
    }


def target_oracle(images: np.ndarray, records: list[WorldRecord], kind: str = DEFAULT_KIND) -> dict:
    """The scene kind's oracle on the targets themselves: the ceiling of every agreement."""
    readings = scene_kind(kind).read_batch(images)
    samples = [
        {"valid": r.valid, "agreement": agreement(rec.attributes(), r)}
        for rec, r in zip(records, readings, strict=True)
    ]
    return oracle_summary(samples, kind)


def machine() -> dict:
    """Where the bench ran."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_config(
    n: int,
    source: TargetSource,
    backbone: str,
    extractors: list[str],
    presets: Sequence[str],
    include_unguided: bool,
    settings: dict,
    device: torch.device,
    dtype: str,
    compare: Sequence[str] = (),
    extractor_weights: Mapping[str, str | Path] | None = None,
) -> dict:
    """Everything needed to rerun the bench, and where and when it ran (the extractors' weights files if any)."""
    weights = {"extractor_weights": {k: str(v) for k, v in extractor_weights.items()}} if extractor_weights else {}
    return {
        "n": n,
        **source.record(),
        "decode_seeds": f"{source.noise_seed} + target index",
        "pairs": PAIRS,
        "pair_seed": source.noise_seed + PAIR_SEED_OFFSET,
        "backbone": backbone,
        "extractors": list(extractors),
        **weights,
        "presets": list(presets),
        "include_unguided": include_unguided,
        "compare": list(compare),
        "settings": settings,
        "device": str(device),
        "dtype": dtype,
        "featscope": __version__,
        "torch": str(torch.__version__),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def run_bench(
    out: str | Path,
    *,
    n: int = 32,
    split: str | None = DEFAULT_SPLIT,
    seed: int | None = None,
    extractors: Sequence[str] = ("world:shape-net", "world:color-net"),
    extractor_weights: Mapping[str, str | Path] | None = None,
    presets: Sequence[str] = ("fast",),
    include_unguided: bool = True,
    compare: Sequence[str] = (),
    backbone: str = "world:ddpm",
    settings: dict | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    quiet: bool = False,
    overwrite: bool = False,
) -> dict:
    """Decode ``n`` world images with every extractor and preset, score them and write ``out/``.

    The targets are scenes of the world kind (``world.kinds``) of the backbone's image size: ``shapes32`` for a
    32 px backbone, ``patterns64`` for a 64 px one; the kind's oracle scores them. They are the first ``n`` images
    of the evaluation ``split`` (``test`` or ``tuning``, held out from every
    shipped model's training; docs/evaluation.md), or with ``seed`` those of ``generate(n, seed)``; target ``i`` is
    decoded from seed ``i`` (``seed + i`` with a seed). ``extractor_weights`` maps an extractor's spec to a local
    weights file to load instead of its published one. ``settings``
    override every preset (an unguided row always has w_g = 0). ``compare`` adds rows that are not featscope's
    solver (``comparisons.COMPARISONS``: best-of-n, exemplars, lucent, maco, fourier), scored the same way; a peer
    row whose package is missing is skipped with a one-line note on stderr. Returns what ``results.json`` holds.
    """
    out, settings = Path(out), dict(settings or {})
    extractors = list(dict.fromkeys(extractors))
    check_out(out, overwrite)
    if n < 1:
        raise FeatscopeError(f"n must be at least 1, not {n}")
    if not extractors:
        raise FeatscopeError("no extractor given; pass at least one, e.g. --extractors world:shape-net")
    weights = dict(extractor_weights or {})
    stray = [spec for spec in weights if spec not in extractors]
    if stray:
        known = ", ".join(extractors)
        raise FeatscopeError(f"weights given for {stray[0]!r}, which is not among the extractors ({known})")
    rows = bench_rows(presets, include_unguided, settings)
    compare, notes = check_comparisons(list(compare))
    for note in notes:
        print(note, file=sys.stderr)
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    model = load_backbone(backbone, device=torch_device)
    kind = backbone_kind(model)
    nets = {spec: load_extractor(spec, weights=weights.get(spec), device=torch_device) for spec in extractors}
    source = TargetSource(split, seed, kind)
    images, records = source.images(n)
    seeds = [source.noise_seed + i for i in range(n)]
    report = {
        "config": run_config(
            n, source, backbone, extractors, presets, include_unguided, settings, torch_device, dtype, compare, weights
        ),
        "skipped": notes,
        "chance": chance_levels(kind),
        "oracle_on_targets": target_oracle(images, records, kind),
        "pixel_noise_of_targets": {"median": float(np.median(pixel_noise(images)))},
        "background_deviation_of_targets": {"median": float(np.nanmedian(background_deviation(images)))},
        "extractors": [],
    }
    decoded, shared = {}, Shared(model, source, images, rows[0].config)
    total = len(nets) * (len(rows) + len(compare))
    with tqdm(total=total, disable=quiet, desc="bench", unit="run", dynamic_ncols=True) as bar:
        for spec, extractor in nets.items():
            target_features = features_of(extractor, images)
            reference = pair_reference(extractor, source.noise_seed, kind)
            entry = {"extractor": spec, "layer": extractor.layer, "pair_median_distance": reference, "rows": []}
            for row in rows:
                bar.set_postfix(extractor=spec, row=row.label)
                best, cost, seconds, memory = solve(
                    model, extractor, target_features, row.config, seeds=seeds, dtype=torch_dtype, quiet=quiet
                )
                samples = score_samples(best, target_features, records, extractor, reference, kind)
                folder = f"images/{spec_slug(spec)}/{row.slug}"
                entry["rows"].append(summarise_row(row, samples, cost, seconds / n, memory, folder, kind))
                decoded[spec, row.label] = best
                shared.best_of = shared.best_of or round(cost["network_evaluations"])
                bar.update(1)
            for name in compare:
                bar.set_postfix(extractor=spec, row=name)
                chosen, cost, seconds = run_comparison(name, shared, extractor, target_features, out / "maco")
                samples = score_samples(chosen, target_features, records, extractor, reference, kind)
                row = Comparison(name, comparison_settings(name, shared))
                folder = f"images/{spec_slug(spec)}/{row.slug}"
                memory = peak_memory_mb(torch_device)
                entry["rows"].append(summarise_row(row, samples, cost, seconds, memory, folder, kind))
                decoded[spec, row.label] = chosen
                bar.update(1)
            report["extractors"].append(entry)
    write_outputs(out, report, images, decoded)
    return report


def write_outputs(out: Path, report: dict, targets: np.ndarray, decoded: dict) -> None:
    """Images, plots and the markdown table, then ``results.json`` last: its presence marks a whole result."""
    if (out / RESULTS).exists():  # overwriting a bench result: the old one goes first, whole
        (out / RESULTS).unlink()
        shutil.rmtree(out / "images", ignore_errors=True)
    for i, image in enumerate(targets):
        save_image(image, out / "images" / "targets" / f"{i:03d}.png")
    for entry in report["extractors"]:
        for row in entry["rows"]:
            for i, image in enumerate(decoded[entry["extractor"], row["label"]]):
                save_image(image, out / row["images"] / f"{i:03d}.png")
    atomic_write_bytes(out / "agreement.png", agreement_figure(report))
    atomic_write_bytes(out / "distance_vs_evaluations.png", distance_figure(report))
    atomic_write_bytes(out / "samples.png", samples_figure(targets, decoded))
    atomic_write_bytes(out / "grid.png", grid_figure(targets, decoded))
    atomic_write_text(out / "results.md", markdown(report))
    atomic_write_json(out / RESULTS, report)
