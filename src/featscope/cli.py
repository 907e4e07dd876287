"""The ``featscope`` command line: one entry point with sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from featscope.errors import FeatscopeError

EPILOG_DECODE = """\
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

EPILOG_BENCH = """\
what the numbers mean (one table per extractor, one row per preset):
  rel. distance   squared L2 distance between the feature of the decoded image and the target's,
                  divided by the median squared distance between the features of 256 random pairs of
                  world images: 0 = the same feature, 1 = as far apart as a typical random pair
                  (the decoded image is the solver's best: of every x0 estimate along the sampling
                  trajectory, the one nearest the target feature; saved as 8-bit PNG, then scored)
  cosine          cosine similarity of decoded and target features (mean over targets)
  valid           share of decoded images in which the world oracle finds one clear object
  shape, color, size, position, background
                  share of targets whose attribute the oracle reads back from the decoded image (an
                  invalid image counts as a miss); chance = 1 / number of values (shape 20%, color 17%,
                  size 50%, position 11%, background 33%)
  92% [85, 96]    a rate with its 95% Wilson interval
  pixel noise     mean |image - its 3x3 median| on a 0-255 scale (median over targets): speckle that
                  optimising pixels against the network leaves (rendered targets: about 0.4)
  bg dev.         mean |pixel - background colour| away from the object, 0-255 (median over targets):
                  speckle and blotches on the flat world background (rendered targets: 0)
  evals/image     passes of the network under study per image by the solver: two per guided
                  iteration (one with the UNet, one to track the best image), one per backward step
  s/image         wall-clock seconds per image (a batch's time / n)
  peak MB         peak memory: CUDA allocator peak on a GPU, the process's maximum resident set on a CPU
rows: each preset, and "unguided (PRESET)": the same sampler and seeds with w_g = 0, the baseline.
Target i is the world image i of --seed, decoded from seed --seed + i.

writes into --out: results.json (every number, per target too, and the config), results.md (the tables),
agreement.png, distance_vs_evaluations.png, samples.png and images/ (targets and decoded best images).

example:
  featscope bench --n 32 --extractors world:shape-net,world:color-net --presets fast,faster --out runs/bench
"""


def _add_model_options(parser: argparse.ArgumentParser, *, backbone: bool = True) -> None:
    group = parser.add_argument_group("models")
    if backbone:
        group.add_argument(
            "--backbone",
            default="world:ddpm",
            metavar="SPEC",
            help="diffusion model: sd:HUB_ID_OR_FOLDER, sd:FILE.ckpt|.safetensors, pixel:FOLDER, "
            "world:ddpm (default: %(default)s, the embedded model)",
        )
        group.add_argument(
            "--backbone-config",
            metavar="FOLDER_OR_ID",
            help="diffusers config (folder or hub id) for a single-file checkpoint that diffusers "
            "cannot infer, e.g. a fine-tuned SD 1.x",
        )
    group.add_argument(
        "--extractor",
        default="world:shape-net",
        metavar="SPEC",
        help="network under study, optionally @layer: clip:RN50, torchvision:resnet50, "
        "torchvision:vit_h_14, torchvision:NAME@layer, timm:NAME@layer, open_clip:ARCH/PRETRAINED, "
        "pkg.module:factory, world:shape-net|color-net|spurious-net (default: %(default)s)",
    )
    group.add_argument(
        "--extractor-weights",
        metavar="FILE",
        help="local weights (state dict) for the extractor instead of its published download",
    )


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    group.add_argument(
        "--dtype",
        default="fp32",
        choices=["fp32", "fp16", "bf16"],
        help="network precision under autocast; loss and gradient rescale stay fp32",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed and memory (all off by default; see docs/speed.md for measurements)")
    group.add_argument("--channels-last", action="store_true", help="NHWC memory layout for every conv network")
    group.add_argument("--compile", action="store_true", help="torch.compile the networks (one-off compile cost)")
    group.add_argument(
        "--low-memory",
        action="store_true",
        help="gradient checkpointing of the UNet and VAE: lower peak memory, about a third more time",
    )


def _speed(args: argparse.Namespace):
    from featscope.speed import SpeedOptions

    return SpeedOptions(channels_last=args.channels_last, compile=args.compile, low_memory=args.low_memory)


def _decode_parser(sub) -> None:
    p = sub.add_parser(
        "decode",
        help="generate images whose feature matches a target feature (universal solver)",
        description="Decode a feature into images by guided diffusion (training-free).",
        epilog=EPILOG_DECODE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    _add_model_options(p)
    s = p.add_argument_group("solver (a preset, then any override)")
    s.add_argument(
        "--preset",
        default=None,
        choices=["reference", "fast", "faster", "refine"],
        help="reference = the published setting (1000-step DDPM, K=1000 for the first 5 steps then 8, "
        "w_g=4, thr 3.0; 2.0 for ViT-H/14); fast = DDIM 50, K=2; faster = DDIM 25, K=2; refine = fast with "
        "backward guidance (80 Adam steps on each x0 estimate) in the last 6 steps: 4.5%% of reference's "
        "evaluations, 0.32-0.63x its median distance on the world networks, with background artifacts "
        "(docs/speed.md) (default: fast)",
    )
    s.add_argument("--sampler", choices=["ddpm", "ddim"], help="ddpm = ancestral as published, ddim = eta 0")
    s.add_argument("--steps", type=int, dest="num_steps", metavar="T", help="number of sampling steps (T)")
    s.add_argument(
        "--guidance-weight",
        "--wg",
        type=float,
        dest="guidance_weight",
        metavar="W_G",
        help="w_g: weight of the rescaled feature gradient added to eps",
    )
    s.add_argument(
        "--recurrence",
        "-K",
        type=int,
        dest="recurrence",
        metavar="K",
        help="K: self-recurrence iterations per step (re-noise and repeat)",
    )
    s.add_argument(
        "--early-recurrence",
        type=int,
        metavar="K_EARLY",
        help="K for the first --early-steps steps (early step emphasis; reference 1000)",
    )
    s.add_argument(
        "--early-steps",
        type=int,
        metavar="N",
        help="number of first steps with emphasis: T - T' in the paper (reference 5: t = 999..995)",
    )
    s.add_argument(
        "--late-recurrence",
        type=int,
        metavar="K_LATE",
        help="K for the last --late-steps steps (refinement near the clean image; the `refine` preset)",
    )
    s.add_argument("--late-steps", type=int, metavar="N", help="number of last steps with K_LATE (published: 0)")
    s.add_argument(
        "--candidates",
        type=int,
        metavar="N",
        help="trajectories started per image; the one nearest the target after --select-after steps goes on "
        "(published: 1)",
    )
    s.add_argument(
        "--select-after", type=int, metavar="STEPS", help="steps all candidates run before the nearest is kept"
    )
    s.add_argument(
        "--backward-steps",
        type=int,
        metavar="M",
        help="backward guidance: M Adam steps on each x0 estimate toward the target feature, each one network "
        "evaluation (universal guidance's m; published decoder: 0)",
    )
    s.add_argument("--backward-lr", type=float, metavar="LR", help="Adam step size of backward guidance (0.01)")
    s.add_argument(
        "--backward-from", type=int, metavar="STEP", help="first sampling step with backward guidance (0 = all)"
    )
    s.add_argument(
        "--backward-blur",
        type=float,
        metavar="SIGMA",
        help="Gaussian blur (pixels of the x0 estimate) on the backward step's change: no pixel speckle, but "
        "low-frequency blotches instead (featscope's; published: 0)",
    )
    s.add_argument(
        "--grad-clip",
        type=float,
        metavar="THR",
        help="grad_thres: clamp the rescaled gradient to mean +- THR*std element-wise; <=0 off",
    )
    s.add_argument("--loss", choices=["l2", "cosine"], help="feature distance: squared L2 (published) or cosine")
    s.add_argument("--prompt", help="text prompt for the backbone (default empty = unconditional, as published)")
    s.add_argument("--guidance-scale", type=float, help="classifier-free guidance on --prompt (1 = off)")
    s.add_argument(
        "--stop-distance",
        type=float,
        metavar="D",
        help="stop early once every sample's best squared distance is at most D",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="DIR", help="run folder (default: runs/decode-<first target>)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    o.add_argument("--num-samples", type=int, default=1, help="images per target, seeds seed..seed+N-1")
    o.add_argument("--seed", type=int, default=0, help="random seed: same seed and settings give the same image")
    o.add_argument("--batch-size", type=int, default=None, help="samples per batch (default: all at once)")
    o.add_argument("--save-every", type=int, default=0, metavar="N", help="save x0 estimates every N steps in steps/")
    _add_runtime_options(p)
    _add_speed_options(p)


# UniversalConfig fields that both `decode` and `bench` take as options (decode adds the prompt and the stop)
_GUIDANCE_KEYS = (
    "sampler",
    "num_steps",
    "guidance_weight",
    "recurrence",
    "early_recurrence",
    "early_steps",
    "late_recurrence",
    "late_steps",
    "candidates",
    "select_after",
    "backward_steps",
    "backward_lr",
    "backward_from",
    "backward_blur",
    "grad_clip",
    "loss",
)


def _run_decode(args: argparse.Namespace) -> int:
    from featscope.decoding import decode

    settings = {k: getattr(args, k) for k in (*_GUIDANCE_KEYS, "prompt", "guidance_scale", "stop_distance")}
    if not args.target and not args.text:
        raise FeatscopeError("no target given; pass --target FILE (image or feature file) or --text TEXT")
    first = Path(args.target[0]).stem if args.target else "text"
    out = args.out or f"runs/decode-{first}"
    result = decode(
        args.target,
        text=args.text,
        backbone=args.backbone,
        extractor=args.extractor,
        preset=args.preset,
        num_samples=args.num_samples,
        seed=args.seed,
        out=out,
        overwrite=args.overwrite,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        save_every=args.save_every,
        backbone_config=args.backbone_config,
        extractor_weights=args.extractor_weights,
        speed=_speed(args),
        quiet=args.quiet,
        **settings,
    )
    summary = json.loads((result.run_dir / "metrics.json").read_text())["summary"]
    print(f"wrote {result.run_dir}/ (final, best, metrics.json, log.jsonl, config.yaml)")
    print(
        f"best distance {summary['mean_best_distance']:.4g}, final distance {summary['mean_final_distance']:.4g}, "
        f"best cosine {summary['mean_best_cosine']:.3f}, {summary['network_evaluations']} network evaluations, "
        f"{summary['wall_seconds']:.1f} s"
    )
    return 0


def _encode_parser(sub) -> None:
    p = sub.add_parser(
        "encode",
        help="save the feature of an image as a target tensor",
        description="Compute a network's feature of one or more images and save it "
        "(.safetensors, .pt or .npy), to use later as --target.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, metavar="FILE", help="feature file to write (.safetensors/.pt/.npy)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="resize images to this square size first (default: as the extractor preprocesses)",
    )
    _add_model_options(p, backbone=False)
    _add_runtime_options(p)


def _run_encode(args: argparse.Namespace) -> int:
    import torch

    from featscope.devices import resolve_device
    from featscope.extractors import load_extractor
    from featscope.images import load_image
    from featscope.targets import save_feature

    device = resolve_device(args.device)
    extractor = load_extractor(args.extractor, weights=args.extractor_weights, device=device)
    feats = []
    for path in args.images:
        image = load_image(path).to(device)
        if args.image_size:
            image = torch.nn.functional.interpolate(
                image, size=(args.image_size,) * 2, mode="bicubic", antialias=True
            ).clamp(0, 1)
        feats.append(extractor.target_features(image).float().cpu())
    feature = torch.cat(feats)
    save_feature(
        feature if len(args.images) > 1 else feature[0],
        args.out,
        metadata={"extractor": args.extractor, "layer": str(extractor.layer)},
    )
    print(f"wrote {args.out}: feature of shape {tuple(feature.shape if len(args.images) > 1 else feature.shape[1:])}")
    return 0


def _layers_parser(sub) -> None:
    p = sub.add_parser(
        "layers",
        help="list a network's layer names (for SPEC@layer)",
        description="List the layers of a network, with output shapes, to pick SPEC@layer.",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--extractor-weights", metavar="FILE")


def _run_layers(args: argparse.Namespace) -> int:
    from featscope.extractors import list_layers

    for name, kind, shape in list_layers(args.spec, weights=args.extractor_weights):
        print(f"{name:50s} {kind:28s} {tuple(shape) if shape is not None else ''}")
    return 0


def _world_parser(sub) -> None:
    p = sub.add_parser(
        "world",
        help="the embedded shapes world: sample images, train its models",
        description="The embedded world: small images with known attributes and models trained on it.",
    )
    wsub = p.add_subparsers(dest="world_command", required=True)
    s = wsub.add_parser("sample", help="write world images and their attribute records")
    s.add_argument("-n", type=int, default=16, help="number of images")
    s.add_argument("--out", required=True, metavar="DIR")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    for name in ("shape", "color", "size", "position", "background"):
        s.add_argument(f"--{name}", help=f"fix the {name} of every image")
    t = wsub.add_parser(
        "train",
        help="train (or resume training of) a world model",
        description="Train a world model reproducibly from a seed; ddpm training resumes from "
        "DIR/checkpoint.pt when it exists.",
    )
    t.add_argument("model", choices=["ddpm", "shape-net", "color-net", "spurious-net"])
    t.add_argument(
        "--out",
        required=True,
        metavar="DIR_OR_FILE",
        help="training folder (ddpm) or weights file .safetensors (networks)",
    )
    t.add_argument("--steps", type=int, default=None, help="optimiser steps (ddpm: total, counting resumed ones)")
    t.add_argument("--seed", type=int, default=0)
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
        "--pool-posterior-targets",
        action="store_true",
        help="ddpm: regress onto the training pool's posterior mean of x0 given the noisy image and the caption "
        "instead of each image's own x0 (Stable Target Field): the same optimum with far less target noise at "
        "high noise, for the steps this call runs",
    )
    t.add_argument(
        "--on-policy-share",
        type=float,
        default=0.0,
        help="ddpm: share of each batch drawn from the states the model's own unconditional DDIM sampler visits "
        "at t >= --high-noise-from, labelled with the training pool's posterior mean of x0 (DAgger-style "
        "correction of the sampler's path; default: %(default)s)",
    )
    t.add_argument(
        "--on-policy-refresh",
        type=int,
        default=50,
        metavar="STEPS",
        help="ddpm: roll the sampler's states out anew every STEPS steps (default: %(default)s)",
    )
    t.add_argument(
        "--channels",
        metavar="C1,C2,C3",
        help="ddpm: widths of the UNet's three levels, multiples of 16, for a new run (default: the shipped "
        "32,64,96; a resumed run keeps its own)",
    )
    t.add_argument("--export", metavar="DIR", help="ddpm: write the EMA weights as a pipeline folder here")
    t.add_argument("--quiet", action="store_true")


def _run_world(args: argparse.Namespace) -> int:
    if args.world_command == "sample":
        from featscope.world.sample import write_samples

        fixed = {k: getattr(args, k) for k in ("shape", "color", "size", "position", "background") if getattr(args, k)}
        paths = write_samples(args.n, Path(args.out), seed=args.seed, overwrite=args.overwrite, **fixed)
        print(f"wrote {len(paths)} images and records.jsonl to {args.out}")
        return 0
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
            pool_posterior_targets=args.pool_posterior_targets,
            on_policy_share=args.on_policy_share,
            on_policy_refresh=args.on_policy_refresh,
        )
        print(f"checkpoint {ckpt}")
        if args.export:
            print(f"exported {train.export_ddpm(ckpt, args.export)}")
    else:
        metrics = train.train_classifier(args.model, args.out, args.steps, seed=args.seed, quiet=args.quiet)
        print(json.dumps(metrics))
    return 0


def _channels_option(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise FeatscopeError(f"--channels {text!r} is not a list of integers; pass e.g. 32,64,96") from None


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure decoding on world images: feature distance and attributes read back by the oracle",
        description="Decode fresh world images from their features with each extractor and preset (and an "
        "unguided baseline), then score the decoded images against the targets.",
        epilog=EPILOG_BENCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t = p.add_argument_group("targets")
    t.add_argument("-n", "--n", type=int, default=32, help="number of world target images (default: %(default)s)")
    t.add_argument("--seed", type=int, default=0, help="seed of the targets and of the decoding (default: 0)")
    m = p.add_argument_group("models")
    m.add_argument("--backbone", default="world:ddpm", metavar="SPEC", help="diffusion model (default: %(default)s)")
    m.add_argument(
        "--extractors",
        default="world:shape-net,world:color-net",
        metavar="SPEC,SPEC",
        help="networks under study, comma-separated (default: %(default)s)",
    )
    s = p.add_argument_group("solver (each preset, then any override, for every row)")
    s.add_argument(
        "--presets", default="fast", metavar="NAME,NAME", help="reference, fast, faster, refine (default: fast)"
    )
    s.add_argument("--no-unguided", action="store_true", help="skip the unguided baseline rows (w_g = 0)")
    s.add_argument("--sampler", choices=["ddpm", "ddim"], help="ddpm = ancestral as published, ddim = eta 0")
    s.add_argument("--steps", type=int, dest="num_steps", metavar="T", help="number of sampling steps (T)")
    s.add_argument(
        "--guidance-weight",
        "--wg",
        type=float,
        dest="guidance_weight",
        metavar="W_G",
        help="w_g: weight of the feature gradient (unguided rows: 0)",
    )
    s.add_argument("--recurrence", "-K", type=int, dest="recurrence", metavar="K", help="K: self-recurrence per step")
    s.add_argument("--early-recurrence", type=int, metavar="K_EARLY", help="K for the first --early-steps steps")
    s.add_argument("--early-steps", type=int, metavar="N", help="number of first steps with K_EARLY")
    s.add_argument("--late-recurrence", type=int, metavar="K_LATE", help="K for the last --late-steps steps")
    s.add_argument("--late-steps", type=int, metavar="N", help="number of last steps with K_LATE")
    s.add_argument("--candidates", type=int, metavar="N", help="trajectories per image; the nearest goes on")
    s.add_argument("--select-after", type=int, metavar="STEPS", help="steps the candidates run before the choice")
    s.add_argument("--backward-steps", type=int, metavar="M", help="backward guidance: Adam steps on each x0")
    s.add_argument("--backward-lr", type=float, metavar="LR", help="Adam step size of backward guidance")
    s.add_argument("--backward-from", type=int, metavar="STEP", help="first sampling step with backward guidance")
    s.add_argument("--backward-blur", type=float, metavar="SIGMA", help="Gaussian blur on the backward change")
    s.add_argument("--grad-clip", type=float, metavar="THR", help="grad_thres: clamp to mean +- THR*std; <=0 off")
    s.add_argument("--loss", choices=["l2", "cosine"], help="feature distance guided on: squared L2 or cosine")
    i = p.add_argument_group("investigation methods (--method counterfactual,difference,neuron; end-to-end solver)")
    i.add_argument(
        "--method",
        default="decode",
        metavar="NAME,NAME",
        help="decode (default: the universal decoder); featinv (the embedded FeatInv model next to the universal "
        "decoder's first --presets on the same targets); or any of counterfactual, difference, neuron: the "
        "investigation measurements (counterfactuals circle -> square of -n images, with and without background "
        "regularisers; shape-net vs spurious-net differences, n/8 per shape; neurons 0-3, n/8 each). "
        "--steps sets their DDIM steps",
    )
    i.add_argument("--iterations", type=int, metavar="N", help="end-to-end optimisation steps (default: 20)")
    i.add_argument("--cutouts", type=int, metavar="N", help="augmented views per image (default: 16)")
    i.add_argument("--latent-lr", type=float, help="lr of x_T (default 1e-3; 1e-2 flips world:shape-net)")
    i.add_argument("--cond-lr", type=float, help="lr of the prompt-embedding deltas (default 1e-2)")
    i.add_argument("--uncond-lr", type=float, help="lr of the null-text deltas (default 1e-2)")
    i.add_argument("--batch", type=int, default=8, metavar="B", help="counterfactual images per batch (default: 8)")
    i.add_argument(
        "--featinv-steps",
        default="50",
        metavar="T,T",
        help="--method featinv: DDIM step counts of FeatInv, one row each (default: 50, as published)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="DIR", help="folder for results.json, results.md and the plots")
    o.add_argument("--overwrite", action="store_true", help="replace the results already in --out")
    _add_runtime_options(p)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _run_investigation_bench(args: argparse.Namespace, methods: list[str]) -> int:
    from featscope.bench.investigation import run_investigation_bench

    names = ("num_steps", "iterations", "cutouts", "latent_lr", "cond_lr", "uncond_lr")
    settings = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    run_investigation_bench(
        args.out,
        methods,
        n=args.n,
        seed=args.seed,
        backbone=args.backbone,
        batch=args.batch,
        device=args.device,
        quiet=args.quiet,
        overwrite=args.overwrite,
        **settings,
    )
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/ (results.json, results.md, image grids)")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from featscope.bench import run_bench

    methods = _names(args.method)
    if methods == ["featinv"]:
        from featscope.bench.featinv import run_featinv_bench

        presets = _names(args.presets)
        counts = _names(args.featinv_steps)
        if not all(x.isdigit() and int(x) > 0 for x in counts):
            raise FeatscopeError(f"--featinv-steps takes positive step counts like 50,10,5, not {args.featinv_steps!r}")
        steps = [int(x) for x in counts]
        run_featinv_bench(args.out, n=args.n, seed=args.seed, preset=presets[0], featinv_steps=steps,
                          quiet=args.quiet, overwrite=args.overwrite)  # fmt: skip
        print((Path(args.out) / "results.md").read_text())
        return 0
    if methods != ["decode"]:
        if "decode" in methods:
            raise FeatscopeError("run --method decode and the investigation methods into separate --out folders")
        return _run_investigation_bench(args, methods)
    settings = {k: getattr(args, k) for k in _GUIDANCE_KEYS if getattr(args, k) is not None}
    run_bench(
        args.out,
        n=args.n,
        seed=args.seed,
        extractors=_names(args.extractors),
        presets=_names(args.presets),
        include_unguided=not args.no_unguided,
        backbone=args.backbone,
        settings=settings,
        device=args.device,
        dtype=args.dtype,
        quiet=args.quiet,
        overwrite=args.overwrite,
    )
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/ (results.json, results.md, agreement.png, distance_vs_evaluations.png, samples.png)")
    return 0


def _add_solver_options(parser: argparse.ArgumentParser) -> None:
    s = parser.add_argument_group("end-to-end solver (defaults: DiG-IN's published settings)")
    s.add_argument("--steps", type=int, dest="num_steps", metavar="N", help="DDIM steps (default 20)")
    s.add_argument("--iterations", type=int, metavar="I", help="Adam steps; I + 1 images, iteration 0 = plain sample")
    s.add_argument("--guidance-scale", type=float, help="classifier-free guidance (default 3.0)")
    s.add_argument("--cutouts", type=int, help="augmented views per image in the gradient pass (default 16)")
    s.add_argument("--latent-lr", type=float, help="lr of x_T (default 1e-3)")
    s.add_argument("--cond-lr", type=float, help="lr of the prompt-embedding delta (default 1e-2)")
    s.add_argument("--uncond-lr", type=float, help="lr of the null-text delta (default 1e-2)")
    s.add_argument("--loss-steps", type=int, help="loss on the x0 predictions of the last N steps (default 3)")
    s.add_argument("--early-stop-loss", type=float, help="stop once the loss is below this")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _solver_settings(args: argparse.Namespace) -> dict:
    keys = ("num_steps", "iterations", "guidance_scale", "cutouts", "latent_lr", "cond_lr", "uncond_lr", "loss_steps")
    settings = {k: getattr(args, k) for k in (*keys, "early_stop_loss") if getattr(args, k) is not None}
    return settings


def _add_images_options(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("images (files, or one dataset folder ROOT/<class>/*.jpg|png)")
    d.add_argument("images", nargs="+", metavar="IMAGE_OR_DATASET")
    d.add_argument("--class-names", metavar="FILE", help="class names: one per line (folder order) or dir<TAB>name")
    d.add_argument("--classes", metavar="A,B", help="only these classes of the dataset (names or folder names)")
    d.add_argument("--images-per-class", type=int, metavar="N", help="the first N images of each class")


def _add_investigate_common(parser: argparse.ArgumentParser, *, out: str) -> None:
    parser.add_argument(
        "--backbone", default="world:ddpm", metavar="SPEC", help="diffusion model (default: %(default)s)"
    )
    parser.add_argument("--out", default=out, metavar="DIR", help="one folder per item in here (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or item lines")


EPILOG_INVESTIGATE = """\
examples:
  featscope investigate difference --net1 world:shape-net@fc --net2 world:spurious-net@fc --classes square,star
  featscope investigate neuron --net world:shape-net@fc --channels 3,17 --images-folder data/shapes
  featscope investigate counterfactual --net world:shape-net@fc cat.png --start square --target circle \\
      --mask cat_mask.png --mask-postprocess erosion_3,dilation_5,blur_9_3
  torchrun --standalone --nproc-per-node 4 -m featscope.cli investigate difference ...   # items split over ranks

Each item gets out/<item>/ (start.png for a real image, sample.png = iteration 0, result.png = best
iterate, strip.png, loss.png, metrics.json, config.yaml), written atomically; a re-run skips items whose
metrics.json exists. out/summary.json and out/summary.md cover all items.
"""


def _investigate_parser(sub) -> None:
    p = sub.add_parser(
        "investigate",
        help="classifier differences, neurons and counterfactuals by end-to-end optimisation (DiG-IN)",
        description="Investigate a network by optimising generated images end to end (DiG-IN).",
        epilog=EPILOG_INVESTIGATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    isub = p.add_subparsers(dest="investigate_command", required=True, metavar="KIND")
    d = isub.add_parser("difference", help="images that net1 sees as a class and net2 does not")
    d.add_argument("--net1", required=True, metavar="SPEC", help="network that should recognise the class")
    d.add_argument("--net2", required=True, metavar="SPEC", help="network that should not")
    d.add_argument("--classes", metavar="A,B", help="class names or indices of net1 (default: all)")
    d.add_argument("--samples-per-class", type=int, default=1, metavar="N")
    d.add_argument("--prompt-template", metavar="TEXT", help="prompt with {label} (default: '{label}' for the "
                   "world, 'a photograph of a {label}' else)")  # fmt: skip
    d.add_argument("--loss", default="conf", choices=["conf", "log_conf", "logit_margin"], help="(default: conf)")
    _add_investigate_common(d, out="runs/difference")
    _add_solver_options(d)
    n = isub.add_parser("neuron", help="images that raise one channel of a layer")
    n.add_argument("--net", required=True, metavar="SPEC")
    n.add_argument("--layer", help="layer name (default: the input of the last linear layer)")
    n.add_argument("--channels", default="0", metavar="C,C", help="channels (neurons) to visualise (default: 0)")
    n.add_argument("--minimise", action="store_true", help="lower the channel instead of raising it")
    n.add_argument("--prompt", default="", help="prompt of the plain samples (default: empty)")
    n.add_argument("--samples", type=int, default=1, metavar="N", help="samples per channel")
    n.add_argument("--images-folder", metavar="DIR", help="dataset folder: also save its top-k images per channel")
    n.add_argument("--top-k", type=int, default=8, metavar="K")
    n.add_argument("--namer", metavar="vlm:DIR", help="name each channel by the captions of its top-k images from "
                   "a local image-to-text model (e.g. BLIP); default: their most frequent class")  # fmt: skip
    _add_investigate_common(n, out="runs/neuron")
    _add_solver_options(n)
    c = isub.add_parser("counterfactual", help="change real images toward a target class (null-text inversion first)")
    c.add_argument("--net", required=True, metavar="SPEC")
    c.add_argument("--start", metavar="CLASS", help="class of the images (default: a dataset's folder class)")
    c.add_argument("--target", required=True, metavar="CLASS[,CLASS]", help="target class(es)")
    c.add_argument("--prompt", help="caption of the images ({label} = start class); default: IMAGE.txt or template")
    c.add_argument("--prompt-template", metavar="TEXT", help="caption from the start class, with {label}")
    c.add_argument("--regularizers", default="latent_background_l2,px_background_l2", metavar="NAME,NAME")
    c.add_argument("--regularizer-weights", default="25,250", metavar="W,W", help="(default: 25,250 as published)")
    c.add_argument(
        "--mask",
        metavar="PNG|cross-attention|sam:DIR",
        help="foreground mask: a PNG (white = object, the image's size); cross-attention[:T|:otsu] (the start "
        "class word's cross-attention scaled to [0, 1], cut at T, default 0.3); sam:DIR (a local SAM/SAM-HQ "
        "folder, prompted with that map's box and peak)",
    )
    c.add_argument("--mask-postprocess", default="", metavar="STEPS", help="e.g. erosion_3,dilation_20,blur_45_30")
    c.add_argument("--loss", default="ce", choices=["ce", "conf", "log_conf"])
    c.add_argument("--inner-steps", type=int, default=10, help="null-text inversion steps per DDIM step")
    _add_images_options(c)
    _add_investigate_common(c, out="runs/counterfactual")
    _add_solver_options(c)


def _run_investigate(args: argparse.Namespace) -> int:
    from featscope import investigate

    common = {"out": args.out, "backbone": args.backbone, "device": args.device, "quiet": args.quiet}
    settings = _solver_settings(args)
    if args.investigate_command == "difference":
        classes = [investigate.parse_label(c) for c in _names(args.classes)] if args.classes else None
        summary = investigate.difference(
            args.net1,
            args.net2,
            classes,
            prompt_template=args.prompt_template,
            samples_per_class=args.samples_per_class,
            loss=args.loss,
            seed=args.seed,
            **common,
            **settings,
        )
    elif args.investigate_command == "neuron":
        try:
            channels = [int(c) for c in _names(args.channels)]
        except ValueError:
            raise FeatscopeError(f"--channels takes comma-separated integers, not {args.channels!r}") from None
        summary = investigate.neuron(
            args.net,
            args.layer,
            channels,
            prompt=args.prompt,
            samples=args.samples,
            maximise=not args.minimise,
            images_folder=args.images_folder,
            top_k=args.top_k,
            namer=args.namer,
            seed=args.seed,
            **common,
            **settings,
        )
    else:
        try:
            weights = [float(w) for w in _names(args.regularizer_weights)]
        except ValueError:
            raise FeatscopeError(f"--regularizer-weights takes numbers, not {args.regularizer_weights!r}") from None
        summary = investigate.counterfactual(
            args.net,
            args.images,
            investigate.parse_label(args.start) if args.start else None,
            [investigate.parse_label(t) for t in _names(args.target)],
            prompt=args.prompt,
            prompt_template=args.prompt_template,
            regularizers=_names(args.regularizers),
            regularizer_weights=weights,
            mask=args.mask,
            mask_postprocess=_names(args.mask_postprocess),
            loss=args.loss,
            inner_steps=args.inner_steps,
            class_names=args.class_names,
            classes=_names(args.classes) if args.classes else None,
            images_per_class=args.images_per_class,
            seed=args.seed,
            **common,
            **settings,
        )
    _report(summary, args.out)
    return 0


def _report(summary: dict | None, out: str) -> None:
    if summary is None:  # not rank 0
        return
    print(Path(out, "summary.md").read_text())
    print(f"wrote {out}/ ({summary['done']} of {summary['items']} items, summary.json, summary.md)")


def _invert_parser(sub) -> None:
    p = sub.add_parser(
        "invert",
        help="null-text inversion of real images (x_T and per-step null texts, for counterfactuals)",
        description="Null-text inversion: per image out/<item>/x_T.pt, null_texts.pt, start.png, "
        "reconstruction.png, metrics.json (reconstruction error) and config.yaml.",
    )
    _add_images_options(p)
    p.add_argument("--prompt", help="caption of every image ({label} = class); default: IMAGE.txt or template")
    p.add_argument("--prompt-template", metavar="TEXT", help="caption from a dataset's class name, with {label}")
    p.add_argument("--steps", type=int, default=20, dest="num_steps", help="DDIM steps (default: %(default)s)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: %(default)s)")
    p.add_argument("--inner-steps", type=int, default=10, help="Adam steps per DDIM step (default: %(default)s)")
    _add_investigate_common(p, out="runs/invert")


def _run_invert(args: argparse.Namespace) -> int:
    from featscope.investigate import invert

    summary = invert(
        args.images,
        out=args.out,
        backbone=args.backbone,
        prompt=args.prompt,
        prompt_template=args.prompt_template,
        num_steps=args.num_steps,
        guidance_scale=args.guidance_scale,
        inner_steps=args.inner_steps,
        class_names=args.class_names,
        classes=_names(args.classes) if args.classes else None,
        images_per_class=args.images_per_class,
        device=args.device,
        quiet=args.quiet,
    )
    _report(summary, args.out)
    return 0


def _plugin(module: str):
    """The parser and handler of a command whose argparse code lives in ``module`` (imported on first use)."""
    import importlib

    def add_parser(sub) -> None:
        importlib.import_module(module).add_parser(sub)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(module).run(args)

    return add_parser, run


_featinv_parser, _run_featinv = _plugin("featscope.featinv.cli")
_batch_parser, _run_batch = _plugin("featscope.study.cli")
_report_parser, _run_report = _plugin("featscope.report.cli")


COMMANDS = {
    "featinv": _run_featinv,
    "batch": _run_batch,
    "report": _run_report,
    "decode": _run_decode,
    "encode": _run_encode,
    "layers": _run_layers,
    "world": _run_world,
    "bench": _run_bench,
    "investigate": _run_investigate,
    "invert": _run_invert,
}


def build_parser() -> argparse.ArgumentParser:
    from featscope._version import __version__

    parser = argparse.ArgumentParser(
        prog="featscope",
        description="See what a vision network's feature space encodes, by generating images with diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"featscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for make in (
        _decode_parser,
        _encode_parser,
        _layers_parser,
        _world_parser,
        _bench_parser,
        _investigate_parser,
        _invert_parser,
        _featinv_parser,
        _batch_parser,
        _report_parser,
    ):
        make(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"featscope: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return COMMANDS[args.command](args)
    except FeatscopeError as error:
        print(f"featscope: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featscope: interrupted; no partial result was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
