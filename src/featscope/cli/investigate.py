"""``featscope investigate``: classifier differences, neurons and counterfactuals by end-to-end optimisation
(DiG-IN), word swaps.

Investigate a network by optimising generated images end to end (DiG-IN), or by swapping the class word of an
inverted image's caption (prompt-to-prompt).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from featscope.cli.options import (
    add_images_options,
    add_investigate_common,
    add_knobs,
    knobs,
    names,
    numbers,
    pick,
    print_summary,
    selected_images,
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``investigate`` with its kinds, each with one option per knob of its settings dataclasses
    (:mod:`featscope.investigate.settings`) and of its solver's."""
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
    from featscope.investigate.settings import DifferenceSettings

    d = isub.add_parser("difference", help="images that net1 sees as a class and net2 does not")
    d.add_argument("--net1", required=True, metavar="SPEC", help="network that should recognise the class")
    d.add_argument("--net2", required=True, metavar="SPEC", help="network that should not")
    d.add_argument("--classes", metavar="A,B", help="class names or indices of net1 (default: all)")
    add_knobs(d, d, DifferenceSettings)
    add_investigate_common(d, out="runs/difference")
    _add_solver_options(d)


def _add_neuron(isub: argparse._SubParsersAction) -> None:
    from featscope.investigate.settings import NeuronImagesSettings, NeuronSettings

    n = isub.add_parser("neuron", help="images that raise one channel of a layer")
    n.add_argument("--net", required=True, metavar="SPEC", help="network whose neurons are visualised")
    n.add_argument("--layer", help="layer name (default: the input of the last linear layer)")
    n.add_argument("--channels", default="0", metavar="C,C", help="channels (neurons) to visualise (default: 0)")
    add_knobs(n, n, NeuronSettings)
    n.add_argument("--minimise", action="store_true", help="lower the channel instead of raising it (--direction down)")
    r = n.add_argument_group("neuron counterfactuals of real images (start from each image's inversion)")
    r.add_argument("--images", nargs="+", metavar="IMAGE_OR_DATASET", help="image files, or one dataset folder "
                   "ROOT/<class>/: change each image's channel, keeping its background")  # fmt: skip
    add_knobs(n, r, NeuronImagesSettings, exclude=tuple(f.name for f in fields(NeuronSettings)))
    add_investigate_common(n, out="runs/neuron")
    _add_solver_options(n)


def _add_counterfactual(isub: argparse._SubParsersAction) -> None:
    from featscope.investigate.settings import CounterfactualSettings

    c = isub.add_parser("counterfactual", help="change real images toward a target class (null-text inversion first)")
    c.add_argument("--net", required=True, metavar="SPEC", help="classifier whose decision is changed")
    c.add_argument("--start", metavar="CLASS", help="class of the images (default: a dataset's folder class)")
    c.add_argument("--target", required=True, metavar="CLASS[,CLASS]", help="target class(es)")
    add_knobs(c, c, CounterfactualSettings)
    add_images_options(c)
    add_investigate_common(c, out="runs/counterfactual")
    _add_solver_options(c)


def _add_word_swap(isub: argparse._SubParsersAction) -> None:
    from featscope.investigate.settings import WordSwapSettings
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
    add_knobs(w, w, WordSwapSettings)
    add_knobs(w, w.add_argument_group("inversion, regeneration and the search over tau"), WordSwapConfig)
    add_images_options(w)
    add_investigate_common(w, out="runs/word-swap")


def run(args: argparse.Namespace) -> int:
    """Run the chosen investigation and print its summary."""
    from featscope import investigate

    common = {**pick(args, "out", "backbone", "device", "quiet"), **knobs(args)}
    kind = {"difference": _difference, "neuron": _neuron, "counterfactual": _counterfactual, "word-swap": _word_swap}
    summary = kind[args.investigate_command](args, investigate, common)
    print_summary(summary, args.out)
    return 0


def _difference(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    classes = [investigate.parse_label(c) for c in names(args.classes)] if args.classes else None
    return investigate.difference(args.net1, args.net2, classes, seed=args.seed, **common)


def _neuron(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    from featscope.investigate.settings import NeuronImagesSettings, NeuronSettings

    channels = numbers(args.channels, int, "--channels", "comma-separated integers")
    if args.minimise:
        if common.get("maximise") is True:
            raise FeatscopeError("--minimise and --direction up contradict each other; give one")
        common["maximise"] = False
    mine, other = (NeuronImagesSettings, NeuronSettings) if args.images else (NeuronSettings, NeuronImagesSettings)
    left_out = {f.name for f in fields(other)} - {f.name for f in fields(mine)}  # the other kind's options
    kept = {k: v for k, v in common.items() if k not in left_out}
    if args.images:
        return investigate.neuron_images(args.net, args.images, args.layer, channels, seed=args.seed, **kept)
    return investigate.neuron(args.net, args.layer, channels, seed=args.seed, **kept)


def _labels(args: argparse.Namespace, investigate) -> tuple:
    """--start (None: each image's dataset class) and the classes of --target."""
    start = investigate.parse_label(args.start) if args.start else None
    return start, [investigate.parse_label(t) for t in names(args.target)]


def _counterfactual(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    return investigate.counterfactual(args.net, selected_images(args), *_labels(args, investigate), seed=args.seed,
                                      **common)  # fmt: skip


def _word_swap(args: argparse.Namespace, investigate, common: dict) -> dict | None:
    return investigate.word_swap(args.net, selected_images(args), *_labels(args, investigate), **common)
