"""``featscope decode``: generate images whose feature matches a target feature (universal solver).

Decode a feature into images by guided diffusion (training-free).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from featscope.cli.options import (
    add_knobs,
    add_model_options,
    add_output,
    add_runtime_options,
    add_speed_options,
    knobs,
    pick,
    speed,
)
from featscope.errors import FeatscopeError

EPILOG = """\
examples:
  featscope decode --target cat.png                       # embedded world defaults (offline)
  featscope decode --target cat.jpg --backbone sd:CompVis/stable-diffusion-v1-4 \\
      --extractor torchvision:resnet50 --preset reference --out runs/cat
  featscope decode --text "a black motorbike parked on the dry ground" --extractor clip:RN50 \\
      --backbone sd:/models/sd-v1-4.ckpt --preset reference

The update at every step (paper: Shirahama et al., arXiv 2509.07936):
  g = grad_{z_t} ||f(D(x0_hat(z_t))) - f*||^2, rescaled to ||eps||, clamped to mean +- thr*std;
  eps <- eps + w_g * g; repeated K times per step with re-noising (self-recurrence).
"""
PRESET_HELP = (
    "reference = the published setting (1000-step DDPM, K=1000 for the first 5 steps then 8, w_g=4, thr 3.0; "
    "2.0 for ViT-H/14); fast = DDIM 50 on the schedule rho 1.5, K=2, then 159 sparse backward guidance steps in "
    "the last step: 1%% of reference's network evaluations; faster = DDIM 25, K=2; refine = DDIM 50, K=2 with "
    "backward guidance (80 Adam steps on each x0 estimate) in the last 6 steps: 4.5%% of reference's evaluations, "
    "nearer than reference in feature space on the world, with background artifacts (docs/speed.md) "
    "(default: fast)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``decode``: targets, models, the preset and one option per :class:`UniversalConfig` knob."""
    from featscope.solvers.configs import PRESETS, UniversalConfig

    t = p.add_argument_group("targets (at least one)")
    t.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="FILE",
        help="image (PNG/JPEG) or saved feature (.safetensors/.pt/.npy); repeat for several",
    )
    t.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="text target, encoded by the extractor's text tower (CLIP-family only); repeatable",
    )
    add_model_options(p)
    s = p.add_argument_group("solver (a preset, then any override)")
    s.add_argument("--preset", default=None, choices=list(PRESETS), help=PRESET_HELP)
    add_knobs(p, s, UniversalConfig, defaults=PRESETS["fast"])
    o = p.add_argument_group("output")
    add_output(o, "run folder (default: runs/decode-<first target>)", required=False, overwrite="replace a run folder")
    o.add_argument("--num-samples", type=int, default=1, help="images per target, seeds seed..seed+N-1")
    o.add_argument("--seed", type=int, default=0, help="random seed: same seed and settings give the same image")
    o.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: all at once)")
    o.add_argument("--save-every", type=int, default=0, metavar="N", help="save x0 estimates every N steps in steps/")
    add_runtime_options(p)
    add_speed_options(p)


def run(args: argparse.Namespace) -> int:
    """Decode the targets into a run folder and print its summary line."""
    from featscope.decode_run import decode, summary_line

    if not args.target and not args.text:
        raise FeatscopeError("no target given; pass --target FILE (image or feature file) or --text TEXT")
    first = Path(args.target[0]).stem if args.target else "text"
    out = args.out or f"runs/decode-{first}"
    result = decode(
        args.target,
        text=args.text,
        out=out,
        **pick(
            args,
            "backbone",
            "extractor",
            "preset",
            "num_samples",
            "seed",
            "overwrite",
            "device",
            "dtype",
            "batch_size",
            "save_every",
            "backbone_config",
            "extractor_weights",
            "quiet",
        ),
        speed=speed(args),
        **knobs(args),
    )
    print(f"wrote {result.run_dir}/ (final, best, target, sheet.png, metrics.json, log.jsonl, config.yaml)")
    for sample in result.metrics:
        if sample.get("readings"):
            print(f"{sample['name']}: {summary_line(sample['readings'])}")
    print(f"{result.headline()}, {result.summary['wall_seconds']:.1f} s")
    return 0
