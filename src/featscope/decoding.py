"""Feature decoding: the public entry point of the training-free universal solver."""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from featscope._version import __version__
from featscope.backbones import load_backbone
from featscope.backbones.base import Backbone
from featscope.devices import generators_for, peak_memory_mb, resolve_device, resolve_dtype
from featscope.errors import FeatscopeError, InputFileError
from featscope.extractors import load_extractor
from featscope.extractors.base import Extractor
from featscope.images import png_bytes, save_image
from featscope.losses import feature_cosine, feature_loss
from featscope.runs import RunFolder
from featscope.solvers.universal import StepInfo, UniversalConfig, preset, solve_universal
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


def _measure(extractor: Extractor, images: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[float]]:
    with torch.no_grad():
        features = extractor(images.to(extractor.mean.device)).float().cpu()
    return feature_loss(features, target).tolist(), feature_cosine(features, target).tolist()


def _solver_config(name: str | None, extractor_spec: str, settings: dict) -> UniversalConfig:
    base = preset(name or DEFAULT_PRESET)
    if name == "reference" and extractor_spec.startswith("torchvision:vit_h_14"):
        base = base.with_overrides(grad_clip=2.0)  # the published threshold for ViT-H/14
    config = base.with_overrides(**settings)
    config.validate()
    return config


def decode(
    targets: str | Path | Sequence[str | Path] = (),
    *,
    text: str | Sequence[str] = (),
    features: torch.Tensor | None = None,
    backbone: str | Backbone = DEFAULT_BACKBONE,
    extractor: str | Extractor = DEFAULT_EXTRACTOR,
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
    images; sample ``s`` of every target uses seed ``seed + s``. ``settings`` override the preset's
    solver settings (see ``UniversalConfig``: guidance_weight, recurrence, num_steps, ...). With
    ``out`` the run folder of shared/DESIGN.md is written (atomically). ``speed`` turns on channels-last,
    ``torch.compile`` or gradient checkpointing (:class:`featscope.speed.SpeedOptions`) for the models.
    """
    files = [targets] if isinstance(targets, (str, Path)) else list(targets)
    texts = [text] if isinstance(text, str) else list(text)
    if num_samples < 1:
        raise FeatscopeError("num_samples must be at least 1")
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise InputFileError(f"target file {missing[0]!r} does not exist; check the path")
    extractor_spec = extractor if isinstance(extractor, str) else extractor.name
    config = _solver_config(preset, extractor_spec, settings)
    run = RunFolder(out, overwrite=overwrite) if out is not None else None
    torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=torch_device, config=backbone_config)
    if isinstance(extractor, str):
        extractor = load_extractor(extractor, weights=extractor_weights, device=torch_device)
    backbone.to(torch_device)
    extractor.to(torch_device)
    speed = speed or SpeedOptions()
    apply_speed(backbone, extractor, speed)
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
        "preset": preset or DEFAULT_PRESET,
        "settings": asdict(config),
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
    if run is not None:
        run.open()
        run.write_yaml("config.yaml", record)
    try:
        result = _run(
            backbone, extractor, expanded, seeds, config, torch_dtype, batch_size, run, save_every, quiet, callback
        )
    except BaseException:
        if run is not None:
            run.abandon()
        raise
    final, best, evaluations, where, seconds = result
    final_d, final_c = _measure(extractor, final, expanded)
    best_d, best_c = _measure(extractor, best, expanded)
    memory = peak_memory_mb(torch_device)
    metrics = [
        {
            "name": names[i],
            "seed": seeds[i],
            "final_distance": final_d[i],
            "best_distance": best_d[i],
            "final_cosine": final_c[i],
            "best_cosine": best_c[i],
            "best_found_at": where[i],
            "network_evaluations": evaluations + 2,
            "wall_seconds": round(seconds, 3),
            "peak_memory_mb": round(memory, 1),
        }
        for i in range(len(names))
    ]
    run_dir = None
    if run is not None:
        _write_images(run, final, best, sources, len(target_set), num_samples)
        run.write_json("metrics.json", {"samples": metrics, "summary": _summary(metrics)})
        run_dir = run.commit()
    return DecodeResult(final, best, names, metrics, record, run_dir, sources)


def _expand(targets: Targets, num_samples: int, seed: int):
    rows, names, seeds, sources = [], [], [], []
    for j in range(len(targets)):
        for s in range(num_samples):
            rows.append(targets.features[j])
            names.append(targets.names[j] if num_samples == 1 else f"{targets.names[j]}_s{s}")
            seeds.append(seed + s)
            sources.append(targets.images[j])
    return torch.stack(rows), names, seeds, sources


def _run(backbone, extractor, features, seeds, config, dtype, batch_size, run, save_every, quiet, callback):
    tic = time.time()
    device = backbone.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch_size = batch_size or len(seeds)
    finals, bests, where, evaluations = [], [], [], 0
    for start in range(0, len(seeds), batch_size):
        chunk = slice(start, start + batch_size)

        def on_step(info: StepInfo, offset=start) -> None:
            if run is not None and save_every and (info.step % save_every == 0 or info.step == config.num_steps - 1):
                for b, image in enumerate(info.x0):
                    save_image(image, run.file(f"steps/step{info.step:04d}_{offset + b}.png"))
            if callback is not None:
                callback(info)

        log = (lambda r, offset=start: run.log({"first_sample": offset, **r})) if run is not None else None
        output = solve_universal(
            backbone,
            extractor,
            features[chunk],
            config,
            generators=generators_for(seeds[chunk], device),
            dtype=dtype,
            callback=on_step,
            log=log,
            quiet=quiet,
        )
        finals.append(output.final.cpu())
        bests.append(output.best.cpu())
        where += output.best_where
        evaluations = output.evaluations
    return torch.cat(finals), torch.cat(bests), evaluations, where, time.time() - tic


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
