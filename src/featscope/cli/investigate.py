"""``featscope investigate difference|neuron|counterfactual``: end-to-end optimisation of generated images."""

from __future__ import annotations

import argparse

from featscope.cli.options import (
    Command,
    add_images_options,
    add_investigate_common,
    add_knobs,
    dataset_selection,
    knobs,
    names,
    numbers,
    pick,
    print_summary,
)

EPILOG = """\
examples:
  featscope investigate difference --net1 world:shape-net@fc --net2 world:spurious-net@fc --classes square,star
  featscope investigate neuron --net world:shape-net@fc --channels 3,17 --images-folder data/shapes
  featscope investigate counterfactual --net world:shape-net@fc cat.png --start square --target circle \\
      --mask cat_mask.png --mask-postprocess erosion_3,dilation_5,blur_9_3
  torchrun --standalone --nproc-per-node 4 -m featscope.cli investigate difference ...   # items split over ranks

Each item gets out/<item>/ (target.png for a real image, initial.png = iteration 0, best.png = best
iterate, final.png = last iterate, strip.png, loss.png, metrics.json, config.yaml, log.jsonl), written
atomically; a re-run skips items whose metrics.json exists. out/summary.json and out/summary.md cover all items.
"""
SOLVER_GROUP = (
    "end-to-end solver (defaults: DiG-IN's published settings; on world: backbones 10x its learning rates; "
    "config.yaml records the values used)"
)
MASK_HELP = (
    "foreground mask: a PNG (white = object, the image's size); cross-attention[:T|:otsu] (the start class word's "
    "cross-attention scaled to [0, 1], cut at T, default 0.3); sam:DIR (a local SAM/SAM-HQ folder, prompted with "
    "that map's box and peak)"
)


COMMAND = Command(
    "investigate",
    "classifier differences, neurons and counterfactuals by end-to-end optimisation (DiG-IN)",
    "Investigate a network by optimising generated images end to end (DiG-IN).",
    epilog=EPILOG,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``investigate`` with its three kinds, each with one option per :class:`EndToEndConfig` knob."""
    isub = p.add_subparsers(dest="investigate_command", required=True, metavar="KIND")
    _add_difference(isub)
    _add_neuron(isub)
    _add_counterfactual(isub)


def _add_solver_options(parser: argparse.ArgumentParser) -> None:
    from featscope.solvers.configs import EndToEndConfig

    s = parser.add_argument_group(SOLVER_GROUP)
    add_knobs(parser, s, EndToEndConfig)
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _add_difference(isub: argparse._SubParsersAction) -> None:
    d = isub.add_parser("difference", help="images that net1 sees as a class and net2 does not")
    d.add_argument("--net1", required=True, metavar="SPEC", help="network that should recognise the class")
    d.add_argument("--net2", required=True, metavar="SPEC", help="network that should not")
    d.add_argument("--classes", metavar="A,B", help="class names or indices of net1 (default: all)")
    d.add_argument("--samples-per-class", type=int, default=1, metavar="N", help="images per class (default: 1)")
    d.add_argument("--prompt-template", metavar="TEXT", help="prompt with {label} (default: '{label}' for the "
                   "world, 'a photograph of a {label}' else)")  # fmt: skip
    d.add_argument(
        "--loss",
        default="conf",
        choices=["conf", "log_conf", "logit_margin"],
        help="score s of the class, raised for net1 and lowered for net2: probability, log-probability or logit "
        "margin (default: conf)",
    )
    add_investigate_common(d, out="runs/difference")
    _add_solver_options(d)


def _add_neuron(isub: argparse._SubParsersAction) -> None:
    n = isub.add_parser("neuron", help="images that raise one channel of a layer")
    n.add_argument("--net", required=True, metavar="SPEC", help="network whose neurons are visualised")
    n.add_argument("--layer", help="layer name (default: the input of the last linear layer)")
    n.add_argument("--channels", default="0", metavar="C,C", help="channels (neurons) to visualise (default: 0)")
    n.add_argument("--minimise", action="store_true", help="lower the channel instead of raising it")
    n.add_argument("--prompt", default="", help="prompt of the plain samples (default: empty)")
    n.add_argument("--samples", type=int, default=1, metavar="N", help="samples per channel")
    n.add_argument("--images-folder", metavar="DIR", help="dataset folder: also save its top-k images per channel")
    n.add_argument(
        "--top-k", type=int, default=8, metavar="K", help="top images per channel from --images-folder (default: 8)"
    )
    n.add_argument("--namer", metavar="vlm:DIR", help="name each channel by the captions of its top-k images from "
                   "a local image-to-text model (e.g. BLIP); default: their most frequent class")  # fmt: skip
    add_investigate_common(n, out="runs/neuron")
    _add_solver_options(n)


def _add_counterfactual(isub: argparse._SubParsersAction) -> None:
    c = isub.add_parser("counterfactual", help="change real images toward a target class (null-text inversion first)")
    c.add_argument("--net", required=True, metavar="SPEC", help="classifier whose decision is changed")
    c.add_argument("--start", metavar="CLASS", help="class of the images (default: a dataset's folder class)")
    c.add_argument("--target", required=True, metavar="CLASS[,CLASS]", help="target class(es)")
    c.add_argument("--prompt", help="caption of the images ({label} = start class); default: IMAGE.txt or template")
    c.add_argument("--prompt-template", metavar="TEXT", help="caption from the start class, with {label}")
    c.add_argument(
        "--regularizers",
        default="latent_background_l2,px_background_l2",
        metavar="NAME,NAME",
        help="keep the background: penalties outside the mask (default: %(default)s, as published)",
    )
    c.add_argument(
        "--regularizer-weights",
        default="25,250",
        metavar="W,W",
        help="weight of each regularizer, in order (default: 25,250 as published)",
    )
    c.add_argument("--mask", metavar="PNG|cross-attention|sam:DIR", help=MASK_HELP)
    c.add_argument("--mask-postprocess", default="", metavar="STEPS", help="e.g. erosion_3,dilation_20,blur_45_30")
    c.add_argument(
        "--loss",
        default="ce",
        choices=["ce", "conf", "log_conf"],
        help="raise the target class: -log p (ce, log_conf: the same value) or -p (conf) (default: ce)",
    )
    c.add_argument(
        "--inner-steps", type=int, default=10, help="null-text inversion steps per DDIM step (default: %(default)s)"
    )
    add_images_options(c)
    add_investigate_common(c, out="runs/counterfactual")
    _add_solver_options(c)


def run(args: argparse.Namespace) -> int:
    """Run the chosen investigation and print its summary."""
    from featscope import investigate

    common = pick(args, "out", "backbone", "device", "quiet")
    kind = {"difference": _difference, "neuron": _neuron, "counterfactual": _counterfactual}
    summary = kind[args.investigate_command](args, investigate, {**common, "seed": args.seed, **knobs(args)})
    print_summary(summary, args.out)
    return 0


def _difference(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    classes = [investigate.parse_label(c) for c in names(args.classes)] if args.classes else None
    return investigate.difference(
        args.net1,
        args.net2,
        classes,
        **pick(args, "prompt_template", "samples_per_class", "loss"),
        **common,
    )


def _neuron(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    channels = numbers(args.channels, int, "--channels", "comma-separated integers")
    return investigate.neuron(
        args.net,
        args.layer,
        channels,
        **pick(args, "prompt", "samples", "images_folder", "top_k", "namer"),
        maximise=not args.minimise,
        **common,
    )


def _counterfactual(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    weights = numbers(args.regularizer_weights, float, "--regularizer-weights", "numbers")
    return investigate.counterfactual(
        args.net,
        args.images,
        investigate.parse_label(args.start) if args.start else None,
        [investigate.parse_label(t) for t in names(args.target)],
        **pick(args, "prompt", "prompt_template", "mask", "loss", "inner_steps"),
        regularizers=names(args.regularizers),
        regularizer_weights=weights,
        mask_postprocess=names(args.mask_postprocess),
        **dataset_selection(args),
        **common,
    )
