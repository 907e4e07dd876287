"""Feature decoding, the core: decode feature rows with the training-free universal solver (tensors in, a
:class:`DecodeOutput` out, nothing written). :func:`featscope.decode` (``featscope.decode_run``) runs it on
specs and targets and writes the run folder."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from featscope.backbones.base import Backbone
from featscope.devices import generators_for, peak_memory_mb
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.losses import feature_cosine, feature_loss
from featscope.objectives import feature_match
from featscope.solvers.configs import UniversalConfig
from featscope.solvers.universal import StepInfo, solve_universal


@dataclass
class DecodeOutput:
    """What the decode core returns: images (N, 3, H, W) in [0, 1], per-item metrics and the per-step trace."""

    final: torch.Tensor
    best: torch.Tensor
    metrics: list[dict]  # per item: seed, distances and cosines of final and best, cost
    trace: list[dict]  # the solver's log records (each with ``first_sample``: its batch's first item)
    evaluations: int | float  # the solver's network evaluations per image (``metrics`` add the two measuring passes)
    seconds: float  # wall time of the solve
    peak_memory_mb: float
    unet_equivalents: int | float = 0  # UNet-forward-equivalents per image (a UNet backward = 2 forwards)


def _measure(extractor: Extractor, images: torch.Tensor, target: torch.Tensor) -> tuple[list[float], list[float]]:
    with torch.no_grad():
        features = extractor(images.to(extractor.mean.device)).float().cpu()
    return feature_loss(features, target).tolist(), feature_cosine(features, target).tolist()


def decode_features(
    backbone: Backbone,
    extractor: Extractor,
    features: torch.Tensor,
    config: UniversalConfig,
    seeds: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    log: Callable[[dict], None] | None = None,
    quiet: bool = False,
) -> DecodeOutput:
    """Decode each row of ``features`` (N, ...) with the universal solver, row ``i`` from seed ``seeds[i]``.

    The core of ``decode`` and of the decode bench: loaded models and tensors in, images and numbers out
    (no files). Rows run ``batch_size`` at a time (all at once by default); a row's result does not
    depend on its batch. ``callback`` and ``log`` see each batch's steps, with ``first_sample`` set.
    """
    if len(features) != len(seeds):
        raise FeatscopeError(
            f"{len(features)} feature rows but {len(seeds)} seeds; give one seed per row (repeat a row for several "
            "samples of one target)"
        )
    device = backbone.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    batch_size = batch_size or len(seeds)
    finals, bests, where, trace, evaluated, unet = [], [], [], [], 0.0, 0.0
    for start in range(0, len(seeds), batch_size):
        chunk = slice(start, start + batch_size)

        def on_log(record: dict, offset: int = start) -> None:
            trace.append({"first_sample": offset, **record})
            if log is not None:
                log(trace[-1])

        def on_step(info: StepInfo, offset: int = start) -> None:
            callback(replace(info, first_sample=offset))

        output = solve_universal(
            backbone,
            feature_match(extractor, features[chunk], config.loss),
            config,
            generators=generators_for(list(seeds[chunk]), device),
            dtype=dtype,
            callback=on_step if callback is not None else None,
            log=on_log,
            quiet=quiet,
        )
        finals.append(output.final.cpu())
        bests.append(output.best.cpu())
        where += output.best_where
        evaluated += output.evaluations * len(output.best)
        unet += output.unet_equivalents * len(output.best)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds, memory = time.perf_counter() - tic, peak_memory_mb(device)
    final, best = torch.cat(finals), torch.cat(bests)
    evaluations, unet = _whole(evaluated / len(seeds)), _whole(unet / len(seeds))
    metrics = _metrics(extractor, final, best, features, seeds, where, evaluations, seconds, memory)
    return DecodeOutput(final, best, metrics, trace, evaluations, seconds, memory, unet)


def _whole(value: float) -> int | float:
    """An integral per-image count as int (a mean over images with adaptive stopping may not be)."""
    return int(value) if value == int(value) else round(value, 2)


def _metrics(
    extractor: Extractor,
    final: torch.Tensor,
    best: torch.Tensor,
    features: torch.Tensor,
    seeds: Sequence[int],
    where: list[dict],
    evaluations: int,
    seconds: float,
    memory: float,
) -> list[dict]:
    """Per item: the feature distance and cosine of the final and best images, where the best was found, cost."""
    final_d, final_c = _measure(extractor, final, features.cpu())
    best_d, best_c = _measure(extractor, best, features.cpu())
    return [
        {
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
        for i in range(len(seeds))
    ]
