"""Run folders of the reconstruct, eval and steer commands (written whole or not at all)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from featscope._version import __version__
from featscope.devices import resolve_device, resolve_dtype
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor
from featscope.featinv.config import SampleSettings
from featscope.featinv.evaluation import evaluate
from featscope.featinv.features import to_grid
from featscope.featinv.inputs import Inputs, read_inputs
from featscope.featinv.metrics import position_cosine
from featscope.featinv.model import FeatInvModel, load_model
from featscope.featinv.reconstruction import load_parts, reconstruct
from featscope.featinv.steering import DEFAULT_STRENGTHS, make_edit, steer
from featscope.featinv.world import resolve_model
from featscope.images import image_grid, save_image
from featscope.runs import RunFolder
from featscope.targets import load_feature_file


def _open(model_dir: str | Path | None, device: str, dtype: str):
    model = load_model(resolve_model(model_dir)).to(resolve_device(device))
    backbone, extractor = load_parts(model, resolve_dtype(dtype))
    return model, backbone, extractor


def _config(model: FeatInvModel, settings: SampleSettings, **extra) -> dict:
    return {"model": asdict(model.config), "sampling": asdict(settings), **extra, "featscope": __version__}


def _write_pairs(run: RunFolder, inputs: Inputs, recon: torch.Tensor, size: int) -> None:
    for i, image in enumerate(recon):
        save_image(image, run.file(f"final_{i}.png"))
    rows = [recon]
    if inputs.images is not None:
        rows.insert(0, _resized(inputs.images, recon))
        for i, image in enumerate(inputs.images):
            save_image(image, run.file(f"original_{i}.png"))
    columns = min(8, len(recon))
    save_image(
        image_grid(torch.cat(rows), columns=columns, scale=max(1, size // recon.shape[-1])), run.file("grid.png")
    )


def run_reconstruct(
    out: str | Path,
    files: list[str | Path] = (),
    *,
    model: str | Path | None = None,
    world: int | None = None,
    world_seed: int = 10_000,
    settings: SampleSettings | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Reconstruct images or feature files (and/or ``world`` world images) into a run folder: final_<i>.png,
    original_<i>.png (image inputs), grid.png, metrics.json (names, time), config.yaml."""
    settings = settings or SampleSettings()
    run = RunFolder(out, overwrite=overwrite)
    fs_model, backbone, extractor = _open(model, device, dtype)
    inputs = read_inputs(fs_model, extractor, files, world, world_seed)
    tic = time.time()
    recon = reconstruct(fs_model, inputs.features, backbone=backbone, settings=settings, quiet=quiet)
    metrics = {"names": inputs.names, "wall_seconds": round(time.time() - tic, 2)}
    return _commit_pairs(
        run, inputs, recon, metrics, _config(fs_model, settings, inputs=[str(f) for f in files], world=world)
    )


def _commit_pairs(run: RunFolder, inputs: Inputs, recon: torch.Tensor, metrics: dict, config: dict) -> Path:
    """Write the images, metrics.json and config.yaml into the run folder and commit it (abandoned on error)."""
    run.open()
    try:
        _write_pairs(run, inputs, recon, 256)
        run.write_json("metrics.json", metrics)
        run.write_yaml("config.yaml", config)
    except BaseException:
        run.abandon()
        raise
    return run.commit()


def _per_image(names: list[str], per_image: dict) -> list[dict]:
    return [{"name": n, **{k: (v[i] if v else None) for k, v in per_image.items()}} for i, n in enumerate(names)]


def run_evaluate(
    out: str | Path,
    files: list[str | Path] = (),
    *,
    model: str | Path | None = None,
    world: int | None = None,
    world_seed: int = 10_000,
    settings: SampleSettings | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    overwrite: bool = False,
    quiet: bool = False,
) -> dict:
    """Reconstruct images (files and/or world images) from their feature maps and score the reconstructions;
    writes metrics.json (summary, per image, notes), the images, grid.png and config.yaml. Returns the metrics."""
    settings = settings or SampleSettings()
    run = RunFolder(out, overwrite=overwrite)
    fs_model, backbone, extractor = _open(model, device, dtype)
    inputs = read_inputs(fs_model, extractor, files, world, world_seed)
    if inputs.images is None:
        raise FeatscopeError("eval compares reconstructions with images: give image files or --world N, not features")
    tic = time.time()
    result = evaluate(fs_model, inputs.images, backbone=backbone, extractor=extractor, settings=settings, quiet=quiet)
    metrics = {
        "summary": {**result["summary"], "images": len(inputs.names), "wall_seconds": round(time.time() - tic, 2)},
        "per_image": _per_image(inputs.names, result["per_image"]),
        "notes": result["notes"],
    }
    config = _config(fs_model, settings, inputs=[str(f) for f in files], world=world)
    _commit_pairs(run, inputs, result["reconstructions"], metrics, config)
    return metrics


def _one_map(model: FeatInvModel, extractor: Extractor, file: str | Path) -> Inputs:
    inputs = read_inputs(model, extractor, [file])
    if len(inputs.names) != 1:
        raise FeatscopeError(f"{file} holds {len(inputs.names)} feature maps; steering edits one")
    return inputs


def run_steer(
    out: str | Path,
    source: str | Path,
    edit: str,
    *,
    model: str | Path | None = None,
    strengths: list[float] | None = None,
    region: str = "all",
    concept: list[str | Path] = (),
    direction: str | Path | None = None,
    other: str | Path | None = None,
    channels: list[int] | None = None,
    settings: SampleSettings | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Edit the feature map of ``source`` (image or feature file) with growing strength and reconstruct each;
    writes strip.png (source image first when given, then one column per strength), final_<i>.png,
    metrics.json (strengths; per-position cosine of each reconstruction's map to the edited map), config.yaml."""
    settings = settings or SampleSettings()
    strengths = list(strengths or DEFAULT_STRENGTHS.get(edit, ()))
    if not strengths:
        raise FeatscopeError("give at least one edit strength")
    run = RunFolder(out, overwrite=overwrite)
    fs_model, backbone, extractor = _open(model, device, dtype)
    base = _one_map(fs_model, extractor, source)
    kwargs = {"region": region, "channels": channels}
    if concept:
        kwargs["concept"] = read_inputs(fs_model, extractor, list(concept)).features
    if direction is not None:
        kwargs["direction"] = load_feature_file(direction)
    if other is not None:
        kwargs["other"] = _one_map(fs_model, extractor, other).features
    spec = make_edit(fs_model, edit, base.features, **kwargs)
    recon = steer(fs_model, base.features, spec, strengths, backbone=backbone, settings=settings, quiet=quiet)
    layout = fs_model.config.layout
    edited = torch.cat([spec.apply(to_grid(base.features, layout), s) for s in strengths])
    realised = to_grid(extractor.target_features(recon.to(extractor.mean.device)).float().cpu(), layout)
    cosine = position_cosine(realised, edited).tolist()
    run.open()
    try:
        for i, image in enumerate(recon):
            save_image(image, run.file(f"final_{i}.png"))
        strip = recon if base.images is None else torch.cat([_resized(base.images, recon), recon])
        save_image(image_grid(strip, scale=max(1, 128 // recon.shape[-1])), run.file("strip.png"))
        run.write_json("metrics.json", {"strengths": strengths, "cosine_median_to_edited": cosine})
        record = {
            "source": str(source),
            "edit": edit,
            "strengths": strengths,
            "region": region,
            "concept": [str(c) for c in concept],
            "direction": str(direction) if direction else None,
            "other": str(other) if other else None,
            "channels": channels,
        }
        run.write_yaml("config.yaml", _config(fs_model, settings, steer=record))
    except BaseException:
        run.abandon()
        raise
    return run.commit()


def _resized(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(images, size=like.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
