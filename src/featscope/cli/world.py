"""``featscope world``: the embedded shapes world: sample images, train its models.

The embedded world: small images with known attributes and models trained on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from featscope.cli.options import add_output, add_quiet, sub_command
from featscope.errors import FeatscopeError
from featscope.world import CLASSIFIER_TASKS

ATTRIBUTES = ("shape", "color", "size", "position", "background", "pattern", "tag")
KINDS = ("shapes32", "patterns64")  # featscope.world.kinds, named here so that --help imports no world code


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``world`` with its ``sample`` and ``train`` sub-commands."""
    wsub = p.add_subparsers(dest="world_command", required=True)
    s = wsub.add_parser("sample", help="write world images and their attribute records")
    s.add_argument("-n", type=int, default=16, help="number of images (default: %(default)s)")
    add_output(
        s, "folder for the images and records.jsonl", overwrite="replace the images and records already in --out"
    )
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the images: the same seed gives the same images (default: %(default)s)",
    )
    s.add_argument(
        "--kind",
        choices=KINDS,
        default=KINDS[0],
        help="scene kind: the 32 px shapes world, or 64 px scenes with a pattern and a corner tag "
        "(default: %(default)s)",
    )
    for name in ATTRIBUTES:
        only = " (patterns64 only)" if name in ("pattern", "tag") else ""
        s.add_argument(f"--{name}", help=f"fix the {name} of every image{only}")
    _add_train(wsub)


def _add_train(wsub: argparse._SubParsersAction) -> None:
    """train (or resume training of) a world model.

    Train a world model reproducibly from a seed; ddpm training resumes from DIR/checkpoint.pt when it exists.
    """
    t = sub_command(wsub, _add_train)
    t.add_argument(
        "model",
        choices=["ddpm", *CLASSIFIER_TASKS, "latent-vae", "latent-unet"],
        help="the model to train (latent-vae, then latent-unet: the latent world's Stable Diffusion pipeline "
        "on patterns64 scenes)",
    )
    t.add_argument(
        "--out",
        required=True,
        metavar="DIR_OR_FILE",
        help="training folder (ddpm, latent-*) or weights file .safetensors (networks)",
    )
    t.add_argument("--vae", metavar="DIR", help="latent-unet: the VAE folder that latent-vae wrote (OUT/vae)")
    t.add_argument("--steps", type=int, default=None, help="optimiser steps (ddpm: total, counting resumed ones)")
    t.add_argument(
        "--seed", type=int, default=0, help="seed of the training data, initial weights and noise (default: 0)"
    )
    t.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="ddpm: learning rate of the steps this call runs (default: %(default)s; lower it to anneal a resumed "
        "run; log.jsonl records the rate of every step)",
    )
    t.add_argument(
        "--prediction",
        choices=["epsilon", "v_prediction"],
        default="epsilon",
        help="ddpm: what the UNet predicts (default: %(default)s; v_prediction samples well from pure noise)",
    )
    t.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="ddpm: start a new run from this checkpoint's EMA weights (e.g. fine-tune epsilon into v_prediction)",
    )
    t.add_argument(
        "--caption-dropout",
        type=float,
        default=0.15,
        help="ddpm: share of training captions left empty, which teaches unconditional sampling, for the steps "
        "this call runs (default: %(default)s)",
    )
    t.add_argument(
        "--high-noise-share",
        type=float,
        default=0.0,
        help="ddpm: share of each batch trained at the noisier timesteps (t >= --high-noise-from), where layout "
        "and size are decided (default: %(default)s, uniform timesteps)",
    )
    t.add_argument(
        "--high-noise-from",
        type=int,
        default=500,
        metavar="T",
        help="ddpm: first timestep of the noisier range that --high-noise-share trains on (default: %(default)s)",
    )
    t.add_argument(
        "--anneal-from",
        type=int,
        metavar="STEP",
        help="ddpm: from this step, decay the learning rate along a half cosine to 0 at --steps",
    )
    t.add_argument(
        "--channels",
        metavar="C1,C2,C3",
        help="ddpm: widths of the UNet's three levels, multiples of 16, for a new run (default: the shipped "
        "32,64,96; a resumed run keeps its own)",
    )
    t.add_argument("--export", metavar="DIR", help="ddpm, latent-unet: write the EMA weights as a pipeline folder here")
    add_quiet(t)


def run(args: argparse.Namespace) -> int:
    """Write world samples, or train a world model."""
    if args.world_command == "sample":
        from featscope.world.sample import write_samples

        fixed = {k: getattr(args, k) for k in ATTRIBUTES if getattr(args, k)}
        paths = write_samples(args.n, Path(args.out), seed=args.seed, overwrite=args.overwrite, kind=args.kind, **fixed)
        print(f"wrote {len(paths)} images and records.jsonl to {args.out}")
        return 0
    if args.model.startswith("latent-"):
        return _train_latent(args)
    from featscope.world import train

    if args.model == "ddpm":
        ckpt = train.train_ddpm(
            args.out,
            args.steps or 20000,
            lr=args.lr,
            seed=args.seed,
            quiet=args.quiet,
            prediction_type=args.prediction,
            init_from=args.init_from,
            caption_dropout=args.caption_dropout,
            high_noise_share=args.high_noise_share,
            high_noise_from=args.high_noise_from,
            anneal_from=args.anneal_from,
            channels=_channels_option(args.channels),
        )
        print(f"checkpoint {ckpt}")
        if args.export:
            print(f"exported {train.export_ddpm(ckpt, args.export)}")
    else:
        metrics = train.train_classifier(args.model, args.out, args.steps, seed=args.seed, quiet=args.quiet)
        print(json.dumps(metrics))
    return 0


def _train_latent(args: argparse.Namespace) -> int:
    """Train the latent world's VAE, or its UNet and text encoder on a trained VAE's latents."""
    from featscope.world import latent_train

    steps = args.steps or latent_train.DEFAULT_STEPS[args.model]
    if args.model == "latent-vae":
        print(f"vae {latent_train.train_vae(args.out, steps, seed=args.seed, quiet=args.quiet)}")
        return 0
    if args.vae is None:
        raise FeatscopeError("latent-unet trains on a VAE's latents; pass --vae OUT/vae from latent-vae")
    ckpt = latent_train.train_unet(args.out, steps, args.vae, seed=args.seed, quiet=args.quiet)
    print(f"checkpoint {ckpt}")
    if args.export:
        print(f"exported {latent_train.export_pipeline(ckpt, args.export)}")
    return 0


def _channels_option(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FeatscopeError(f"--channels {text!r} is not a list of integers; pass e.g. 32,64,96") from None
