"""Run folders of the reconstruct, eval and steer commands (the orchestration: load the model and the inputs,
call the core, write the folder whole or not at all)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch

from featscope._version import __version__
from featscope.backbones import Backbone
from featscope.devices import resolve_device, resolve_dtype
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor
from featscope.featinv.config import SampleSettings
from featscope.featinv.evaluation import evaluate
from featscope.featinv.inputs import Inputs, read_inputs
from featscope.featinv.model import FeatInvModel, load_model
from featscope.featinv.reconstruction import load_parts, reconstruct
from featscope.featinv.steering import DEFAULT_STRENGTHS, make_edit, steer
from featscope.featinv.world import resolve_model
from featscope.images import image_grid, save_image
from featscope.orchestration import write_run
from featscope.runs import RunFolder
from featscope.targets import load_feature_file

if TYPE_CHECKING:
    from typing_extensions import Unpack


def _open(model_dir: str | Path | None, device: str, dtype: str) -> tuple[FeatInvModel, Backbone, Extractor]:
    """The FeatInv model (default: the embedded one) on ``device``, with its backbone and network."""
    model = load_model(resolve_model(model_dir)).to(resolve_device(device))
    backbone, extractor = load_parts(model, resolve_dtype(dtype))
    return model, backbone, extractor


def _config(model: FeatInvModel, settings: SampleSettings, **extra) -> dict:
    """config.yaml: the model's config, the sampling settings (under ``settings``, as every method records its
    knobs), the job's own fields and the featscope version."""
    return {"model": asdict(model.config), "settings": asdict(settings), **extra, "featscope": __version__}


def _numbered(stem: str, i: int, count: int) -> str:
    """``stem.png`` for a single image, else ``stem_<i>.png``."""
    return f"{stem}.png" if count == 1 else f"{stem}_{i}.png"


def _commit(
    run: RunFolder,
    targets: torch.Tensor | None,
    results: torch.Tensor,
    metrics: dict,
    config: dict,
    *,
    columns: int | None,
    size: int,
) -> Path:
    """Write a run folder and commit it (abandoned on error): final.png/final_<i>.png (the results),
    target.png/target_<i>.png (the input images, when there are), sheet.png (the targets above or before the
    results in ``columns`` columns, each scaled up to about ``size`` px), metrics.json and config.yaml."""

    def work(run: RunFolder) -> dict:
        for i, image in enumerate(results):
            save_image(image, run.file(_numbered("final", i, len(results))))
        sheet = [results]
        if targets is not None:
            sheet.insert(0, _resized(targets, results))
            for i, image in enumerate(targets):
                save_image(image, run.file(_numbered("target", i, len(targets))))
        scale = max(1, size // results.shape[-1])
        save_image(image_grid(torch.cat(sheet), columns=columns, scale=scale), run.file("sheet.png"))
        return metrics

    return write_run(run, config, work)[0]


class JobOptions(TypedDict, total=False):
    """The options of :func:`run_reconstruct` and :func:`run_evaluate` besides the output and the input files:
    ``model`` (a FeatInv model folder; default: the embedded world model), ``world`` (also N fresh world images,
    from ``world_seed``, default 10,000), ``settings`` (:class:`SampleSettings`; default: the published ones),
    ``device`` ("auto"), ``dtype`` ("fp32"), ``overwrite`` and ``quiet`` (False)."""

    model: str | Path | None
    world: int | None
    world_seed: int
    settings: SampleSettings | None
    device: str
    dtype: str
    overwrite: bool
    quiet: bool


JOB_DEFAULTS: JobOptions = {
    "model": None, "world": None, "world_seed": 10_000, "settings": None, "device": "auto", "dtype": "fp32",
    "overwrite": False, "quiet": False,
}  # fmt: skip


def run_reconstruct(out: str | Path, files: list[str | Path] = (), **options: Unpack[JobOptions]) -> Path:
    """Reconstruct images or feature files (and/or ``world`` world images) into a run folder: final.png or
    final_<i>.png, target(_<i>).png (when every input is an image), sheet.png, metrics.json (names, time),
    config.yaml. ``options``: :class:`JobOptions`."""
    job = _PairsJob.open(out, files, options)
    tic = time.time()
    result = reconstruct(job.model, job.inputs.features, backbone=job.backbone, settings=job.settings, quiet=job.quiet)
    metrics = {"names": job.inputs.names, "wall_seconds": round(time.time() - tic, 2)}
    return job.commit(result.images, metrics)


@dataclass
class _PairsJob:
    """What reconstruct and eval share: the run folder (claimed first), the loaded models and the inputs."""

    run: RunFolder
    model: FeatInvModel
    backbone: Backbone
    extractor: Extractor
    inputs: Inputs
    settings: SampleSettings
    config: dict
    quiet: bool

    @classmethod
    def open(cls, out: str | Path, files: list[str | Path], options: JobOptions) -> _PairsJob:
        """Claim ``out``, load the model and read the inputs (files and/or world images); ``options`` over
        :data:`JOB_DEFAULTS`."""
        unknown = sorted(set(options) - set(JOB_DEFAULTS))
        if unknown:
            raise TypeError(f"unexpected FeatInv job option(s): {', '.join(unknown)}")
        o = {**JOB_DEFAULTS, **options}
        model, world, world_seed, settings = o["model"], o["world"], o["world_seed"], o["settings"]
        device, dtype, overwrite, quiet = o["device"], o["dtype"], o["overwrite"], o["quiet"]
        settings = settings or SampleSettings()
        run = RunFolder(out, overwrite=overwrite)
        fs_model, backbone, extractor = _open(model, device, dtype)
        inputs = read_inputs(fs_model, extractor, files, world, world_seed)
        config = _config(fs_model, settings, inputs=[str(f) for f in files], world=world)
        return cls(run, fs_model, backbone, extractor, inputs, settings, config, quiet)

    def commit(self, results: torch.Tensor, metrics: dict) -> Path:
        """The folder: the sheet has a row of targets over a row of results, up to 8 columns."""
        return _commit(
            self.run, self.inputs.images, results, metrics, self.config, columns=min(8, len(results)), size=256
        )


def _per_image(names: list[str], per_image: dict) -> list[dict]:
    """One row per image: its name and its value of every metric (None: not applicable)."""
    return [{"name": n, **{k: (v[i] if v else None) for k, v in per_image.items()}} for i, n in enumerate(names)]


def run_evaluate(out: str | Path, files: list[str | Path] = (), **options: Unpack[JobOptions]) -> dict:
    """Reconstruct images (files and/or world images) from their feature maps and score the reconstructions;
    writes metrics.json (summary, per image, notes), the images, sheet.png and config.yaml. Returns the metrics.
    ``options``: :class:`JobOptions`."""
    job = _PairsJob.open(out, files, options)
    inputs = job.inputs
    if inputs.images is None:
        raise FeatscopeError("eval compares reconstructions with images: give image files or --world N, not features")
    tic = time.time()
    result = evaluate(
        job.model, inputs.images, backbone=job.backbone, extractor=job.extractor, settings=job.settings, quiet=job.quiet
    )
    metrics = {
        "summary": {**result.summary, "images": len(inputs.names), "wall_seconds": round(time.time() - tic, 2)},
        "per_image": _per_image(inputs.names, result.per_image),
        "notes": result.notes,
    }
    job.commit(result.images, metrics)
    return metrics


def _one_map(model: FeatInvModel, extractor: Extractor, file: str | Path) -> Inputs:
    """The single feature map (and image) of an image or feature file; more than one is refused."""
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
    writes final_<i>.png (one per strength; final.png for one), target.png (when the source is an image),
    sheet.png (the source image first when given, then one column per strength), metrics.json (strengths;
    per-position cosine of each reconstruction's map to the edited map), config.yaml."""
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
    result = steer(
        fs_model, base.features, spec, strengths, backbone=backbone, extractor=extractor, settings=settings, quiet=quiet
    )
    metrics = {"strengths": strengths, "cosine_median_to_edited": result.cosine_median_to_edited}
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
    config = _config(fs_model, settings, steer=record)
    return _commit(run, base.images, result.images, metrics, config, columns=None, size=128)


def _resized(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``images`` resized to the size of ``like`` (bicubic, antialiased)."""
    return torch.nn.functional.interpolate(images, size=like.shape[-2:], mode="bicubic", antialias=True).clamp(0, 1)
