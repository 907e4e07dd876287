"""``featscope investigate``: classifier differences, neurons and counterfactuals by end-to-end optimisation
(DiG-IN), word swaps.

Investigate a network by optimising generated images end to end (DiG-IN), or by swapping the class word of an
inverted image's caption (prompt-to-prompt).
"""

from __future__ import annotations

import argparse

from featscope.cli.options import (
    add_caption_model,
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
from featscope.errors import FeatscopeError

EPILOG = """\
examples:
  featscope investigate difference --net1 world:shape-net@fc --net2 world:spurious-net@fc --classes square,star
  featscope investigate neuron --net world:shape-net@fc --channels 3,17 --images-folder data/shapes
  featscope investigate counterfactual --net world:shape-net@fc cat.png --start square --target circle \\
      --mask cat_mask.png --mask-postprocess erosion_3,dilation_5,blur_9_3
  featscope investigate word-swap --net world:shape-net@fc circle.png --start circle --target square
  featscope investigate neuron --net world:shape-net@fc --channels 3 --images circle.png --direction up
  torchrun --standalone --nproc-per-node 4 -m featscope.cli investigate difference ...   # items split over ranks

Each item gets out/<item>/ (target.png for a real image, initial.png = iteration 0, best.png = best
iterate, final.png = last iterate, strip.png, loss.png, metrics.json, config.yaml, log.jsonl), written
atomically; a re-run skips items whose metrics.json exists. out/summary.json and out/summary.md cover all items.
"""
SOLVER_GROUP = (
    "end-to-end solver (defaults: DiG-IN's published settings; on world: backbones 10x its learning rates, and "
    "40 iterations for neurons; config.yaml records the values used)"
)
MASK_HELP = (
    "foreground mask: a PNG (white = object, the image's size); cross-attention[:T|:otsu] (the start class word's "
    "cross-attention scaled to [0, 1], cut at T, default 0.3); sam:DIR (a local SAM/SAM-HQ folder, prompted with "
    "that map's box and peak); none (the whole image is background). Default: the backbone's (world: "
    "cross-attention:otsu; others: none)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``investigate`` with its three kinds, each with one option per :class:`EndToEndConfig` knob."""
    isub = p.add_subparsers(dest="investigate_command", required=True, metavar="KIND")
    _add_difference(isub)
    _add_neuron(isub)
    _add_counterfactual(isub)
    _add_word_swap(isub)


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
    n.add_argument("--direction", choices=["up", "down"], help="raise (up, the default) or lower the channel")
    n.add_argument("--minimise", action="store_true", help="lower the channel instead of raising it (--direction down)")
    n.add_argument("--prompt", help="prompt of the plain samples (default: empty); with --images, the caption of "
                   "every image ({label} = class; default: IMAGE.txt or records.jsonl, --caption-model, "
                   "template)")  # fmt: skip
    n.add_argument("--samples", type=int, default=1, metavar="N", help="samples per channel")
    n.add_argument("--images-folder", metavar="DIR", help="dataset folder: also save its top-k images per channel")
    n.add_argument(
        "--top-k", type=int, default=8, metavar="K", help="top images per channel from --images-folder (default: 8)"
    )
    n.add_argument("--namer", metavar="vlm:DIR", help="name each channel by the captions of its top-k images from "
                   "a local image-to-text model (e.g. BLIP); default: their most frequent class")  # fmt: skip
    r = n.add_argument_group("neuron counterfactuals of real images (start from each image's inversion)")
    r.add_argument("--images", nargs="+", metavar="IMAGE_OR_DATASET", help="image files, or one dataset folder "
                   "ROOT/<class>/: change each image's channel, keeping its background")  # fmt: skip
    r.add_argument("--prompt-template", metavar="TEXT", help="caption from a dataset's class name, with {label}")
    add_caption_model(r)
    _add_background_options(r, mask_help="foreground mask PNG (white = object, the image's size)")
    add_investigate_common(n, out="runs/neuron")
    _add_solver_options(n)


def _add_counterfactual(isub: argparse._SubParsersAction) -> None:
    c = isub.add_parser("counterfactual", help="change real images toward a target class (null-text inversion first)")
    c.add_argument("--net", required=True, metavar="SPEC", help="classifier whose decision is changed")
    c.add_argument("--start", metavar="CLASS", help="class of the images (default: a dataset's folder class)")
    c.add_argument("--target", required=True, metavar="CLASS[,CLASS]", help="target class(es)")
    c.add_argument("--prompt", help="caption of the images ({label} = start class); default: IMAGE.txt or the "
                   "records.jsonl beside it, --caption-model or template")  # fmt: skip
    c.add_argument("--prompt-template", metavar="TEXT", help="caption from the start class, with {label}")
    add_caption_model(c)
    _add_background_options(c, mask_help=MASK_HELP)
    c.add_argument(
        "--loss",
        default="ce",
        choices=["ce", "conf", "log_conf"],
        help="raise the target class: -log p (ce, log_conf: the same value) or -p (conf) (default: ce)",
    )
    add_images_options(c)
    add_investigate_common(c, out="runs/counterfactual")
    _add_solver_options(c)


def _add_background_options(parser, *, mask_help: str) -> None:
    """--regularizers, --regularizer-weights, --mask, --mask-postprocess and --inner-steps."""
    parser.add_argument(
        "--regularizers",
        default="latent_background_l2,px_background_l2",
        metavar="NAME,NAME",
        help="keep the background: penalties outside the mask (default: %(default)s, as published)",
    )
    parser.add_argument(
        "--regularizer-weights",
        default="25,250",
        metavar="W,W",
        help="weight of each regularizer, in order (default: 25,250 as published)",
    )
    parser.add_argument("--mask", metavar="PNG|cross-attention|sam:DIR" if mask_help == MASK_HELP else "PNG",
                        help=mask_help)  # fmt: skip
    parser.add_argument("--mask-postprocess", default="", metavar="STEPS", help="e.g. erosion_3,dilation_20,blur_45_30")
    parser.add_argument(
        "--inner-steps", type=int, default=10, help="null-text inversion steps per DDIM step (default: %(default)s)"
    )


def _add_word_swap(isub: argparse._SubParsersAction) -> None:
    from featscope.solvers.configs import WordSwapConfig

    w = isub.add_parser(
        "word-swap",
        help="word-swap counterfactuals of real images: the class word swapped in the caption (prompt-to-prompt)",
        description="Invert each image with its caption, swap the class word for the target class word and "
        "regenerate, re-injecting the caption's cross-attention for a fraction tau of the steps; per image the "
        "nearest result the classifier gives the target class (above --flip) is kept, over the --taus searched.",
    )
    w.add_argument("--net", required=True, metavar="SPEC", help="classifier that scores the results")
    w.add_argument("--start", metavar="CLASS", help="class of the images (default: a dataset's folder class)")
    w.add_argument("--target", required=True, metavar="CLASS[,CLASS]", help="target class(es)")
    w.add_argument("--word", help="the word to replace in the caption (default: the start class name)")
    w.add_argument("--new-word", help="the word to put in its place (default: the target class name)")
    w.add_argument("--prompt", help="caption of the images ({label} = start class); default: IMAGE.txt or the "
                   "records.jsonl beside it, --caption-model or template")  # fmt: skip
    w.add_argument("--prompt-template", metavar="TEXT", help="caption from the start class, with {label}")
    add_caption_model(w)
    s = w.add_argument_group("inversion, regeneration and the search over tau")
    add_knobs(w, s, WordSwapConfig)
    s.add_argument("--taus", dest="tau_grid", default="0,0.2,0.4,0.6,0.8,1", metavar="T,T",
                   help="[tau] fractions of the steps with the caption's cross-attention re-injected, searched per "
                   "image (default: %(default)s)")  # fmt: skip
    add_images_options(w)
    add_investigate_common(w, out="runs/word-swap")


def run(args: argparse.Namespace) -> int:
    """Run the chosen investigation and print its summary."""
    from featscope import investigate

    common = pick(args, "out", "backbone", "device", "quiet")
    if args.investigate_command == "word-swap":
        summary = _word_swap(args, investigate, {**common, **knobs(args)})
    else:
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
    if args.minimise and args.direction == "up":
        raise FeatscopeError("--minimise and --direction up contradict each other; give one")
    maximise = not args.minimise and args.direction != "down"
    if args.images:
        return investigate.neuron_images(
            args.net,
            args.images,
            args.layer,
            channels,
            **pick(args, "prompt", "prompt_template", "caption_model", "mask", "inner_steps"),
            **_background(args),
            maximise=maximise,
            **common,
        )
    return investigate.neuron(
        args.net,
        args.layer,
        channels,
        **pick(args, "samples", "images_folder", "top_k", "namer"),
        prompt=args.prompt or "",
        maximise=maximise,
        **common,
    )


def _background(args: argparse.Namespace) -> dict:
    return {
        "regularizers": names(args.regularizers),
        "regularizer_weights": numbers(args.regularizer_weights, float, "--regularizer-weights", "numbers"),
        "mask_postprocess": names(args.mask_postprocess),
    }


def _labels(args: argparse.Namespace, investigate) -> tuple:
    """--start (None: each image's dataset class) and the classes of --target."""
    start = investigate.parse_label(args.start) if args.start else None
    return start, [investigate.parse_label(t) for t in names(args.target)]


def _counterfactual(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    return investigate.counterfactual(
        args.net,
        args.images,
        *_labels(args, investigate),
        **pick(args, "prompt", "prompt_template", "caption_model", "mask", "loss", "inner_steps"),
        **_background(args),
        **dataset_selection(args),
        **common,
    )


def _word_swap(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    return investigate.word_swap(
        args.net,
        args.images,
        *_labels(args, investigate),
        **pick(args, "prompt", "prompt_template", "caption_model", "word", "new_word"),
        taus=tuple(numbers(args.tau_grid, float, "--taus")),
        **dataset_selection(args),
        **common,
    )
