"""Feature decoding, the orchestration behind :func:`featscope.decode`: specs are loaded, targets read, the
core (:func:`featscope.decoding.decode_features`) run and the run folder written atomically."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from featscope import registry
from featscope._version import __version__
from featscope.backbones import load_backbone
from featscope.backbones.base import Backbone
from featscope.decoding import DecodeOutput, decode_features
from featscope.devices import resolve_device, resolve_dtype
from featscope.errors import FeatscopeError, InputFileError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.images import png_bytes, save_image
from featscope.orchestration import write_run
from featscope.runs import RunFolder
from featscope.settings import resolve
from featscope.sheet import save_sheet
from featscope.solvers.configs import PRESETS, UniversalConfig
from featscope.solvers.universal import StepInfo
from featscope.speed import SpeedOptions, apply_speed
from featscope.targets import Targets, build_targets

DEFAULT_BACKBONE = "world:ddpm"
DEFAULT_EXTRACTOR = "world:shape-net"
DEFAULT_PRESET = "fast"


@dataclass
class DecodeResult:
    """Decoded images and their numbers; ``final``/``best`` are (N, 3, H, W) in [0, 1]."""

    final: torch.Tensor
    best: torch.Tensor
    names: list[str]
    metrics: list[dict]
    config: dict
    run_dir: Path | None = None
    targets: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def summary(self) -> dict:
        """The means over the images and the cost: what ``metrics.json`` holds as ``summary``."""
        return _summary(self.metrics)

    def headline(self) -> str:
        """Its numbers in one line: mean best and final distance, best cosine, network evaluations ("not
        finite" where no image had a finite value)."""
        s = self.summary
        return (
            f"best distance {_number(s['mean_best_distance'], '.4g')}, "
            f"final distance {_number(s['mean_final_distance'], '.4g')}, "
            f"best cosine {_number(s['mean_best_cosine'], '.3f')}, {s['network_evaluations']} network evaluations"
        )

    def __repr__(self) -> str:
        count = self.summary["samples"]
        where = f", run_dir={str(self.run_dir)!r}" if self.run_dir is not None else ""
        return f"DecodeResult({count} image{'s' if count != 1 else ''}, {self.headline()}{where})"

    def _repr_html_(self) -> str:
        import base64

        def img(t: torch.Tensor | None) -> str:
            if t is None:
                return "<td>(feature)</td>"
            data = base64.b64encode(png_bytes(t)).decode()
            return f'<td><img src="data:image/png;base64,{data}" style="width:96px;image-rendering:pixelated"></td>'

        rows = []
        for i, m in enumerate(self.metrics):
            target = self.targets[i] if i < len(self.targets) else None
            rows.append(
                f"<tr><td>{html.escape(self.names[i])}</td>{img(target)}{img(self.best[i])}{img(self.final[i])}"
                f"<td>{m['best_distance']:.4g}</td><td>{m['final_distance']:.4g}</td><td>{m['best_cosine']:.3f}</td></tr>"
            )
        head = "".join(f"<th>{h}</th>" for h in ("target", "", "best", "final", "best dist", "final dist", "cos"))
        head = f"<tr>{head}</tr>"
        return f"<table>{head}{''.join(rows)}</table>"


def _solver_config(config: UniversalConfig | str | None, settings: dict) -> UniversalConfig:
    """The decode settings: ``config`` (a preset name, default ``fast``, or a UniversalConfig) with ``settings``
    applied."""
    return resolve(UniversalConfig, DEFAULT_PRESET if config is None else config, settings, presets=PRESETS)


def _load_models(
    backbone: str | Backbone,
    extractor: str | Extractor,
    device: torch.device,
    backbone_config: str | None,
    extractor_weights: str | None,
    speed: SpeedOptions,
) -> tuple[Backbone, Extractor]:
    """The backbone and the network (loaded from their specs when given as strings) on ``device``, with ``speed``."""
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=device, config=backbone_config)
    if isinstance(extractor, str):
        extractor = load_extractor(extractor, weights=extractor_weights, device=device)
    backbone.to(device)
    extractor.to(device)
    apply_speed(backbone, extractor, speed)
    return backbone, extractor


def _decoded(
    backbone: Backbone,
    extractor: Extractor,
    expanded: torch.Tensor,
    solver: UniversalConfig,
    seeds: list[int],
    names: list[str],
    sources: list,
    run: RunFolder | None,
    *,
    dtype: torch.dtype,
    batch_size: int | None,
    save_every: int,
    callback: Callable[[StepInfo], None] | None,
    quiet: bool,
) -> tuple[DecodeOutput, list[dict], list[dict]]:
    """Run the core (step images and log lines into ``run`` when given); the output, per-sample metrics with
    the oracle's readings, and the readings."""
    output = decode_features(
        backbone, extractor, expanded, solver, seeds, dtype=dtype, batch_size=batch_size,
        callback=_step_saver(run, save_every, solver.num_steps, callback), log=run.log if run else None, quiet=quiet,
    )  # fmt: skip
    readings = read_results(sources, output.best)
    metrics = [
        {"name": name, **m, **({"readings": r} if r else {})}
        for name, m, r in zip(names, output.metrics, readings, strict=True)
    ]
    return output, metrics, readings


def _write_files(
    run: RunFolder, output: DecodeOutput, sources: list, names: list[str], readings: list[dict], n_targets: int,
    num_samples: int,
) -> None:  # fmt: skip
    """The images and sheet.png of a decode run."""
    _write_images(run, output.final, output.best, sources, n_targets, num_samples)
    notes = [summary_line(r) for r in readings]
    rows = list(zip(sources, output.best, output.final, strict=True))
    save_sheet(run.file("sheet.png"), ["target", "best", "final"], rows, row_labels=names, notes=notes)


def decode(
    targets: str | Path | Sequence[str | Path] = (),
    *,
    text: str | Sequence[str] = (),
    features: torch.Tensor | None = None,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    extractor: str | Extractor = DEFAULT_EXTRACTOR,
    config: UniversalConfig | str | None = None,
    preset: str | None = None,
    num_samples: int = 1,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "auto",
    dtype: str = "fp32",
    batch_size: int | None = None,
    save_every: int = 0,
    backbone_config: str | None = None,
    extractor_weights: str | None = None,
    speed: SpeedOptions | None = None,
    quiet: bool = False,
    callback: Callable[[StepInfo], None] | None = None,
    **settings,
) -> DecodeResult:
    """Generate images whose network feature approaches each target's feature.

    Targets are image files or saved feature tensors (``targets``), texts for CLIP-family networks
    (``text``), or an in-memory (N, ...) tensor (``features``). Each target gets ``num_samples``
    images; sample ``s`` of every target uses seed ``seed + s``. ``config`` is a preset name (default
    ``fast``; ``preset`` is its alias) or a ``UniversalConfig``; ``settings`` override its fields
    (guidance_weight, recurrence, num_steps, ...). With ``out`` the run folder (docs/architecture.md) is
    written (atomically). ``speed`` turns on channels-last, ``torch.compile`` or gradient checkpointing
    (:class:`featscope.speed.SpeedOptions`) for the models. The work is :func:`decode_features`.
    """
    files = [targets] if isinstance(targets, (str, Path)) else list(targets)
    texts = [text] if isinstance(text, str) else list(text)
    _check_inputs(files, num_samples, config, preset)
    config = config if config is not None else (preset or DEFAULT_PRESET)
    solver = _solver_config(config, settings)
    run = RunFolder(out, overwrite=overwrite) if out is not None else None
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    speed = speed or SpeedOptions()
    backbone, extractor = _load_models(backbone, extractor, torch_device, backbone_config, extractor_weights, speed)
    target_set = build_targets(
        extractor, backbone.image_size, files=files, texts=texts, tensors=[features] if features is not None else []
    )
    expanded, names, seeds, sources = _expand(target_set, num_samples, seed)
    record = {
        "method": "decode",
        "solver": "universal",
        "featscope": __version__,
        "torch": str(torch.__version__),
        "backbone": backbone.spec,
        "extractor": extractor.name,
        "layer": extractor.layer,
        "preset": config if isinstance(config, str) else None,
        "settings": asdict(solver),
        "seed": seed,
        "num_samples": num_samples,
        "device": str(torch_device),
        "dtype": dtype,
        "speed": speed.names(),
        "targets": [str(f) for f in files],
        "texts": texts,
        "names": names,
        "seeds": seeds,
    }
    core = {"dtype": torch_dtype, "batch_size": batch_size, "save_every": save_every, "callback": callback}
    core_args = (backbone, extractor, expanded, solver, seeds, names, sources)
    if run is None:
        output, metrics, _ = _decoded(*core_args, None, **core, quiet=quiet)
        return DecodeResult(output.final, output.best, names, metrics, record, None, sources)

    decoded: list[DecodeOutput] = []

    def work(run: RunFolder) -> dict:
        output, metrics, readings = _decoded(*core_args, run, **core, quiet=quiet)
        _write_files(run, output, sources, names, readings, len(target_set), num_samples)
        decoded.append(output)
        return {"samples": metrics, "summary": _summary(metrics)}

    run_dir, written = write_run(run, record, work)
    return DecodeResult(decoded[0].final, decoded[0].best, names, written["samples"], record, run_dir, sources)


def read_results(targets: Sequence[torch.Tensor | None], results: torch.Tensor) -> list[dict]:
    """Per result, what each registered reader (``featscope.registry.register_reader``, e.g. the world's oracle)
    reads of its target image and of it; empty where the target is no image or no reader can read it."""
    rows = [i for i, t in enumerate(targets) if t is not None and t.shape == results[i].shape]
    found: list[dict] = [{} for _ in targets]
    if not rows:
        return found
    images = torch.stack([targets[i] for i in rows]).float()
    for name, reader in registry.readers().items():
        for i, reading in zip(rows, reader(images, results[rows].float()), strict=True):
            if reading is not None:
                found[i][name] = reading
    return found


def summary_line(readings: dict) -> str:
    """The readers' one-line summaries of one result, joined (empty when there is none)."""
    return "; ".join(r["summary"] for r in readings.values() if r.get("summary"))


def _check_inputs(files: list, num_samples: int, config: UniversalConfig | str | None, preset: str | None) -> None:
    if num_samples < 1:
        raise FeatscopeError("num_samples must be at least 1")
    if config is not None and preset is not None:
        raise FeatscopeError("give config= or its alias preset=, not both")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise InputFileError(f"target file {missing[0]!r} does not exist; check the path")


def _step_saver(
    run: RunFolder | None, save_every: int, num_steps: int, callback: Callable[[StepInfo], None] | None
) -> Callable[[StepInfo], None] | None:
    """The step callback: the x0 estimates every ``save_every`` steps (and the last) into ``steps/``, then
    the user's ``callback``; None when neither is wanted."""
    if (run is None or not save_every) and callback is None:
        return None

    def on_step(info: StepInfo) -> None:
        if run is not None and save_every and (info.step % save_every == 0 or info.step == num_steps - 1):
            for b, image in enumerate(info.x0):
                save_image(image, run.file(f"steps/step{info.step:04d}_{info.first_sample + b}.png"))
        if callback is not None:
            callback(info)

    return on_step


def _expand(targets: Targets, num_samples: int, seed: int):
    rows, names, seeds, sources = [], [], [], []
    for j in range(len(targets)):
        for s in range(num_samples):
            rows.append(targets.features[j])
            names.append(targets.names[j] if num_samples == 1 else f"{targets.names[j]}_s{s}")
            seeds.append(seed + s)
            sources.append(targets.images[j])
    return torch.stack(rows), names, seeds, sources


def _write_images(run: RunFolder, final, best, sources, num_targets: int, num_samples: int) -> None:
    single = len(final) == 1
    for i in range(len(final)):
        suffix = "" if single else f"_{i}"
        save_image(final[i], run.file(f"final{suffix}.png"))
        save_image(best[i], run.file(f"best{suffix}.png"))
    for j in range(num_targets):
        source = sources[j * num_samples]
        if source is not None:
            save_image(source, run.file("target.png" if num_targets == 1 else f"target_{j}.png"))


def _number(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "not finite"


def _summary(metrics: list[dict]) -> dict:
    keys = ("final_distance", "best_distance", "final_cosine", "best_cosine")
    summary = {f"mean_{k}": sum(m[k] for m in metrics) / len(metrics) for k in keys}
    summary.update(
        network_evaluations=metrics[0]["network_evaluations"],
        wall_seconds=metrics[0]["wall_seconds"],
        peak_memory_mb=metrics[0]["peak_memory_mb"],
        samples=len(metrics),
    )
    return summary
