"""Seconds per guided iteration and peak memory of the universal solver.

The decoder's share (latent models): its forward and backward pass timed alone on the same batch, over the
iteration's median. One guided iteration = UNet forward+backward, x0 estimate, decoder forward+backward, network
forward+backward, rescale/clamp, scheduler step, plus the post-guidance check (decode + network);
with ``--backward-steps M`` also M backward guidance steps (decoder and network forward+backward each).

    python benchmarks/scripts/guided_iteration.py --backbone world:ddpm --extractor world:shape-net
    python benchmarks/scripts/guided_iteration.py --backbone random:sd-v1 --resolution 512 \
        --extractor torchvision:resnet50 --random-extractor --dtype bf16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from sd_random import random_sd  # noqa: E402

from featscope.backbones import Backbone, load_backbone  # noqa: E402
from featscope.devices import generators_for, peak_memory_mb, resolve_device, resolve_dtype  # noqa: E402
from featscope.extractors import Extractor, load_extractor  # noqa: E402
from featscope.objectives import feature_match  # noqa: E402
from featscope.solvers.configs import PRESETS, UniversalConfig  # noqa: E402
from featscope.solvers.universal import solve_universal  # noqa: E402
from featscope.speed import SpeedOptions, apply_speed  # noqa: E402


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's kind and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def time_guided(
    backbone: Backbone,
    extractor: Extractor,
    *,
    batch: int,
    dtype: torch.dtype,
    iterations: int,
    warmup: int,
    config: UniversalConfig | None = None,
) -> dict:
    """Median seconds per guided iteration of ``solve_universal`` (after ``warmup`` iterations) and peak memory.

    ``config`` (default: DDIM, K 1, w_g 0.3) is run for ``iterations + warmup`` iterations.
    """
    device = backbone.device
    with torch.no_grad():
        target = extractor(torch.rand(batch, 3, *backbone.image_size, device=device))
    base = config or UniversalConfig(sampler="ddim", num_steps=1, recurrence=1, guidance_weight=0.3)
    config = replace(base, num_steps=iterations + warmup, recurrence=1, early_steps=0, stop_distance=None)
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_info) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    solve_universal(
        backbone,
        feature_match(extractor, target, config.loss),
        config,
        generators=generators_for(list(range(batch)), device),
        dtype=dtype,
        callback=tick,
        quiet=True,
    )
    timed = times[warmup:]
    per_iteration = sorted(timed)[len(timed) // 2]
    return {
        "seconds_per_iteration_median": round(per_iteration, 4),
        "seconds_per_image_iteration": round(per_iteration / batch, 4),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "iterations_timed": len(timed),
        "warmup_seconds": round(sum(times[:warmup]), 2),  # includes torch.compile's one-off cost
    }


def time_decoder(backbone: Backbone, *, batch: int, dtype: torch.dtype, repeats: int = 5) -> float | None:
    """Median seconds of the decoder's forward and backward pass on a batch of diffusion states (the VAE's share of
    an iteration: it runs once per guided iteration); None for pixel models, whose decoder is a rescale."""
    if backbone.vae is None:
        return None
    device = backbone.device
    z = torch.randn(batch, *backbone.latent_shape, device=device, requires_grad=True)
    times = []
    for _ in range(repeats + 1):
        tic = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            backbone.decode(z).square().mean().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - tic)
    return sorted(times[1:])[repeats // 2]


def measure(args: argparse.Namespace) -> dict:
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    if args.backbone == "random:sd-v1":
        backbone = random_sd("v1", args.resolution)
    else:
        backbone = load_backbone(args.backbone)
    backbone.to(device)
    extractor = load_extractor(args.extractor, device=device, pretrained=not args.random_extractor)
    speed = SpeedOptions(channels_last=args.channels_last, compile=args.compile, low_memory=args.low_memory)
    apply_speed(backbone, extractor, speed)
    fast = PRESETS["fast"]  # backward steps as `fast` takes them
    config = UniversalConfig(
        sampler="ddim", num_steps=1, recurrence=1, guidance_weight=0.3, backward_steps=args.backward_steps,
        backward_lr=fast.backward_lr, backward_sparsity=fast.backward_sparsity,
    )  # fmt: skip
    timing = time_guided(
        backbone,
        extractor,
        batch=args.batch,
        dtype=dtype,
        iterations=args.iterations,
        warmup=args.warmup,
        config=config,
    )
    decoder = time_decoder(backbone, batch=args.batch, dtype=dtype)
    return {
        "backbone": args.backbone,
        "extractor": args.extractor,
        "decoder_seconds": decoder,
        "decoder_share": None if decoder is None else round(decoder / timing["seconds_per_iteration_median"], 3),
        "resolution": backbone.image_size[0],
        "dtype": args.dtype,
        "speed": speed.names(),
        "backward_steps": args.backward_steps,
        "batch": args.batch,
        "device": device_name(device),
        **timing,
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="world:ddpm", help="a featscope backbone spec, or random:sd-v1")
    parser.add_argument("--extractor", default="world:shape-net")
    parser.add_argument("--random-extractor", action="store_true", help="random weights (same cost)")
    parser.add_argument("--resolution", type=int, default=512, help="for random:sd-v1")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--low-memory", action="store_true", help="gradient checkpointing of UNet and VAE")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--backward-steps",
        type=int,
        default=0,
        help="backward guidance steps in each timed iteration (each a decoder and network forward and backward "
        "pass, no UNet pass); the difference to 0 is their cost",
    )
    parser.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(json.dumps(result))
    if args.json:
        with args.json.open("a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
