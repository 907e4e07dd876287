"""``featscope featinv``: feature-map inversion with a trained ControlNet (FeatInv).

Train a ControlNet that turns a network's spatial feature maps into images, then reconstruct, evaluate and steer
feature maps with it.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from featscope.cli.options import (
    BACKBONE_HELP,
    add_device,
    add_extractor_weights,
    add_knobs,
    add_output,
    add_quiet,
    knobs,
    numbers,
    pick,
    sub_command,
)

if TYPE_CHECKING:
    from featscope.featinv.config import SampleSettings, TrainConfig


EPILOG = """\
examples:
  featscope featinv init --preset published --out models/featinv-convnext   # miniSD + ConvNeXt-B stages.3 @288px
  featscope featinv init --preset published --weights control_featinv_convnext_fin.ckpt --out models/published
  featscope featinv init --backbone sd:lambdalabs/miniSD-diffusers \\
      --extractor timm:convnext_base.fb_in22k_ft_in1k@stages.3@288px --out models/featinv-convnext
  accelerate launch -m featscope.cli featinv train --model models/featinv-convnext --images imagenet/train \\
      --out runs/featinv-convnext --steps 480000
  featscope featinv reconstruct --model runs/featinv-convnext/model cat.jpg feature.safetensors --out runs/rec
  featscope featinv eval --model runs/featinv-convnext/model val/*.JPEG --out runs/eval
  featscope featinv steer --model runs/featinv-convnext/model cat.jpg --edit mix --other dog.jpg --region right \\
      --out runs/mix
  featscope featinv world --out runs/featinv-world          # train + export the embedded world model
  featscope featinv eval --world 16 --out runs/eval-world   # the embedded model on fresh world images

The model: diffusers ControlNetModel.from_unet(backbone UNet) whose conditioning embedding is
  bilinear upsample to the latent grid -> conv3x3(C, W) -> SiLU -> conv3x3(W, W) -> SiLU -> zero conv3x3(W, C0)
Training: eps-prediction MSE with the UNet frozen; 15% of samples get a zero map AND an empty prompt.
Sampling: DDIM (eta 0), eps = eps(z, f, "") + w (eps(z, f, prompt) - eps(z, f, "")), w = 1.75.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``featinv`` and its sub-commands to the top-level sub-parsers."""
    fsub = p.add_subparsers(dest="featinv_command", required=True, metavar="STEP")
    _add_init(fsub)
    _add_train(fsub)
    r = fsub.add_parser("reconstruct", help="images from the feature maps of images or of saved feature files")
    _add_inputs(r, "images (PNG/JPEG) or feature files (.pt/.safetensors/.npy)")
    _add_job_options(r)
    e = fsub.add_parser("eval", help="reconstruct images and score them (metrics.json)")
    _add_inputs(e, "images (PNG/JPEG)")
    _add_job_options(e)
    _add_steer(fsub)
    _add_world(fsub)


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """What reconstruct, eval and steer share: the model, output, runtime and one option per sampling knob."""
    from featscope.featinv.config import SampleSettings

    parser.add_argument(
        "--model",
        metavar="DIR",
        help="FeatInv model folder (from init or RUN/model; default: the embedded world model)",
    )
    add_output(parser, "output folder", overwrite="replace an existing output folder")
    add_device(parser)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="backbone precision")
    add_quiet(parser)
    add_knobs(parser, parser.add_argument_group("sampling (defaults: FeatInv's published ones)"), SampleSettings)


def _add_inputs(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("inputs", nargs="*", metavar="FILE", help=what)
    parser.add_argument("--world", type=int, metavar="N", help="also use N fresh world images")
    parser.add_argument(
        "--world-seed", type=int, default=10_000, help="seed of those world images (default: %(default)s)"
    )


def _add_training(parser: argparse.ArgumentParser, defaults: TrainConfig, title: str) -> None:
    """One option per training knob (help showing ``defaults``), and --threads."""
    from featscope.featinv.config import TrainConfig

    g = parser.add_argument_group(title)
    add_knobs(parser, g, TrainConfig, defaults=defaults)
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _add_init(fsub: argparse._SubParsersAction) -> None:
    from featscope.featinv.config import PRESETS

    i = fsub.add_parser("init", help="build a model from a backbone and a network layer (or the published one)")
    i.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="published: sd:lambdalabs/miniSD-diffusers and timm:convnext_base.fb_in22k_ft_in1k@stages.3@288px "
        "(1024x9x9 maps, 256 px images), adapter width 512; --backbone/--extractor/--adapter-width override it",
    )
    i.add_argument("--backbone", metavar="SPEC", help=BACKBONE_HELP + " (required without --preset)")
    i.add_argument(
        "--backbone-config",
        metavar="FOLDER_OR_ID",
        help="diffusers config of a single-file backbone, e.g. lambdalabs/miniSD-diffusers for miniSD.ckpt",
    )
    i.add_argument(
        "--extractor",
        metavar="SPEC@LAYER[@SIZEpx]",
        help="network, a layer with a spatial map and optionally its input size (required without --preset)",
    )
    add_extractor_weights(i)
    i.add_argument(
        "--weights",
        metavar="FILE",
        help="start from the published FeatInv checkpoint (LDM layout, control_model.*: .ckpt or .safetensors)",
    )
    i.add_argument("--adapter-width", type=int, help="adapter channels (default: the preset's, else 512)")
    i.add_argument("--prompt", help="fixed training prompt (default: the published one; empty for world models)")
    i.add_argument("--seed", type=int, default=0, help="adapter init seed")
    add_output(i, "model folder to write", overwrite="write into a folder that already holds files")


def _add_train(fsub: argparse._SubParsersAction) -> None:
    """train (or resume) a model on an image folder or world images.

    Train with accelerate (run under `accelerate launch` for several GPUs); OUT/checkpoint.pt is resumed exactly.
    """
    from featscope.featinv.config import TrainConfig

    t = sub_command(fsub, _add_train)
    t.add_argument("--model", required=True, metavar="DIR", help="model folder from `featinv init`")
    data = t.add_mutually_exclusive_group(required=True)
    data.add_argument("--images", metavar="DIR", help="folder of training images (recursive)")
    data.add_argument("--world", type=int, metavar="N", help="N generated world images instead")
    t.add_argument("--world-seed", type=int, default=0, help="seed of those world images (default: %(default)s)")
    add_output(t, "training folder (resumed when it holds a checkpoint)", overwrite="start afresh instead of resuming")
    add_device(t, accelerate=True)
    add_quiet(t)
    _add_training(t, TrainConfig(), "training (defaults: FeatInv's published ones)")


def _add_steer(fsub: argparse._SubParsersAction) -> None:
    s = fsub.add_parser("steer", help="edit a feature map with growing strength and reconstruct (sheet.png)")
    s.add_argument("source", metavar="FILE", help="image or feature file whose map is edited")
    s.add_argument(
        "--edit",
        required=True,
        choices=["add", "mix", "scale"],
        help="add: + s * concept direction; mix: blend in --other's map; scale: channels times s",
    )
    s.add_argument("--strengths", metavar="S,S", help="edit strengths (default add 0..2, mix 0..1, scale 1,0.5,0)")
    s.add_argument(
        "--region",
        default="all",
        help="where: all, left, right, top, bottom (halves; an odd grid's middle column or row counts half in "
        "each), R0:R1,C0:C1 (grid cells) or a mask image (default: all)",
    )
    s.add_argument(
        "--concept",
        nargs="+",
        default=[],
        metavar="FILE",
        help="add: images/maps of the concept (direction = their mean minus the source's mean)",
    )
    s.add_argument("--direction", metavar="FILE", help="add: a direction (C,) as .pt/.safetensors/.npy")
    s.add_argument("--other", metavar="FILE", help="mix: the second image or feature map")
    s.add_argument("--channels", metavar="C,C", help="scale: channel indices")
    _add_job_options(s)


def _add_world(fsub: argparse._SubParsersAction) -> None:
    from featscope.featinv.config import WORLD_ADAPTER_WIDTH, WORLD_EXTRACTOR, WORLD_IMAGES, WORLD_TRAIN

    w = fsub.add_parser("world", help="train and export the embedded world model (world:ddpm + world:shape-net)")
    add_output(w, "training folder (resumed when it holds a checkpoint)")
    w.add_argument("--export", metavar="DIR", help="where to export (default: the package's weights folder)")
    w.add_argument("--world-seed", type=int, default=0, help="seed of the training images (default: 0)")
    w.add_argument("-n", type=int, default=WORLD_IMAGES, help="world images to train on (default: %(default)s)")
    w.add_argument(
        "--layer", default=WORLD_EXTRACTOR.partition("@")[2], help="world:shape-net layer (default: %(default)s)"
    )
    w.add_argument(
        "--adapter-width", type=int, default=WORLD_ADAPTER_WIDTH, help="adapter channels (default: %(default)s)"
    )
    add_device(w, accelerate=True)
    add_quiet(w)
    _add_training(w, WORLD_TRAIN, "training (defaults: the world model's)")


def _train_config(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    return defaults.with_overrides(**knobs(args))


def _settings(args: argparse.Namespace) -> SampleSettings:
    from featscope.featinv.config import SampleSettings

    return SampleSettings().with_overrides(**knobs(args))


def _init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from featscope.errors import FeatscopeError, RunExistsError
    from featscope.featinv.config import PRESETS
    from featscope.featinv.model import build
    from featscope.featinv.published import load_published

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise RunExistsError(
            f"output folder {args.out!r} already holds files; pass --overwrite or choose another --out"
        )
    preset = PRESETS[args.preset] if args.preset else None
    backbone = args.backbone or (preset and preset.backbone)
    extractor = args.extractor or (preset and preset.extractor)
    if not backbone or not extractor:
        raise FeatscopeError("give --backbone SPEC and --extractor SPEC@LAYER, or --preset published")
    model = build(
        backbone,
        extractor,
        adapter_width=args.adapter_width or (preset.adapter_width if preset else 512),
        prompt=args.prompt,
        extractor_weights=args.extractor_weights,
        backbone_config=args.backbone_config,
        seed=args.seed,
    )
    if args.weights:
        load_published(model, args.weights)
    model.save(out)
    c = model.config
    weights = f", weights from {args.weights}" if args.weights else ""
    print(
        f"wrote {args.out}/ (config.json, model.safetensors): {c.extractor} maps {tuple(c.feature_shape)} "
        f"({c.layout}, {c.channels} channels) -> {c.backbone} grid {tuple(c.grid)}{weights}"
    )
    return 0


def _set_threads(args: argparse.Namespace) -> None:
    """--threads: torch's CPU threads, when given."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _train(args: argparse.Namespace) -> int:
    from featscope.featinv.config import TrainConfig
    from featscope.featinv.training import train

    _set_threads(args)
    path = train(
        args.model,
        args.out,
        **pick(args, "images", "world", "world_seed", "device", "overwrite", "quiet"),
        config=_train_config(args, TrainConfig()),
    )
    print(f"wrote {path}/ (the trained model); log.jsonl, checkpoint.pt and samples/ in {args.out}/")
    return 0


def _world(args: argparse.Namespace) -> int:
    from featscope.featinv.config import WORLD_TRAIN
    from featscope.featinv.world import train_world

    _set_threads(args)
    path = train_world(
        args.out,
        config=_train_config(args, WORLD_TRAIN),
        **pick(args, "n", "world_seed", "layer", "adapter_width", "export", "device", "quiet"),
    )
    print(f"exported the embedded FeatInv model to {path}/")
    return 0


RUNTIME = ("device", "dtype", "overwrite", "quiet")  # what reconstruct, eval and steer pass on as given


def _job_options(args: argparse.Namespace) -> dict:
    """What reconstruct and eval share: model, inputs from the world, sampling and runtime options."""
    return {**pick(args, "model", "world", "world_seed", *RUNTIME), "settings": _settings(args)}


def _reconstruct(args: argparse.Namespace) -> int:
    from featscope.featinv.jobs import run_reconstruct

    path = run_reconstruct(args.out, args.inputs, **_job_options(args))
    print(f"wrote {path}/ (final(_<i>).png, target(_<i>).png, sheet.png, metrics.json, config.yaml)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from featscope.featinv.jobs import run_evaluate

    metrics = run_evaluate(args.out, args.inputs, **_job_options(args))
    print(json.dumps(metrics["summary"], indent=2))
    for note in metrics["notes"]:
        print(f"note: {note}")
    print(f"wrote {args.out}/ (metrics.json, sheet.png, final(_<i>).png, target(_<i>).png, config.yaml)")
    return 0


def _steer(args: argparse.Namespace) -> int:
    from featscope.featinv.jobs import run_steer

    path = run_steer(
        args.out,
        args.source,
        args.edit,
        **pick(args, "model", "region", "concept", "direction", "other", *RUNTIME),
        strengths=numbers(args.strengths, float, "--strengths"),
        channels=numbers(args.channels, int, "--channels"),
        settings=_settings(args),
    )
    print(f"wrote {path}/ (sheet.png, final_<i>.png, target.png, metrics.json, config.yaml)")
    return 0


STEPS = {"init": _init, "train": _train, "reconstruct": _reconstruct, "eval": _eval, "steer": _steer, "world": _world}


def run(args: argparse.Namespace) -> int:
    """Run the ``featinv`` sub-command named in ``args``."""
    return STEPS[args.featinv_command](args)
