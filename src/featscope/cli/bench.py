"""``featscope bench``: measure decoding, investigations or FeatInv on world images, scored by the world's oracle.

Benchmarks on fresh world images, whose attributes the world's oracle reads back: `decode` (the universal decoder),
`investigate` (counterfactuals, differences, neurons), `featinv` (the embedded FeatInv model next to the universal
decoder), `visualize` (class logits and neurons, featscope beside lucent, MACO, Feature Accentuation, exemplars).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from featscope.cli.options import (
    add_backbone,
    add_device,
    add_knobs,
    add_output,
    add_quiet,
    add_runtime_options,
    knobs,
    names,
    numbers,
    pick,
    sub_command,
)
from featscope.errors import FeatscopeError

KINDS = ("decode", "investigate", "featinv", "visualize")
# featscope.bench.visualization.ROWS, named here so that --help imports no model code
VISUALIZE_ROWS = ("featscope", "lucent", "maco", "accentuation", "exemplars")
TARGETS = ("n", "split", "seed")  # the options of _add_common that choose the targets
EPILOG_DECODE = """\
what the numbers mean (one table per extractor, one row per preset):
  rel. distance   squared L2 distance between the feature of the decoded image and the target's,
                  divided by the median squared distance between the features of 256 random pairs of
                  world images: 0 = the same feature, 1 = as far apart as a typical random pair
                  (the decoded image is the solver's best: of every x0 estimate along the sampling
                  trajectory, the one nearest the target feature; saved as 8-bit PNG, then scored)
  cosine          cosine similarity of decoded and target features (mean over targets)
  valid           share of decoded images in which the world oracle finds one clear object
  shape, color, size, position, background (and pattern, tag for patterns64 scenes)
                  share of targets whose attribute the oracle reads back from the decoded image (an
                  invalid image counts as a miss); chance = the share of the value the world draws
                  most often: 1 / number of values (shape 20%, color 17%, size 50%, position 11%,
                  background 33%, pattern 25%), but tag 85% (untagged)
  92% [85, 96]    a rate with its 95% Wilson interval
  pixel noise     mean |image - its 3x3 median| on a 0-255 scale (median over targets): speckle that
                  optimising pixels against the network leaves (rendered targets: about 0.4)
  bg dev.         mean |pixel - background colour| away from the object, 0-255 (median over targets):
                  speckle and blotches on the flat world background (rendered targets: 0)
  evals/image     passes of the network under study per image by the solver: two per guided
                  iteration (one with the UNet, one to track the best image), one per backward step
  s/image         wall-clock seconds per image (a batch's time / n)
  peak MB         peak memory: CUDA allocator peak on a GPU, the process's maximum resident set on a CPU
rows: each preset, and "unguided (PRESET)": the same sampler and seeds with no guidance (w_g = 0, no backward or
x0 steps), the baseline. --compare adds rows that are not featscope's solver, scored the same way:
  best-of-n       N unguided samples of the backbone with the first preset's sampler and steps (the same
                  seeds for every target), the one nearest the target feature kept; N = that preset's
                  network evaluations per image (fast: 259), one per sample
  exemplars       the nearest image, in feature space, of a pool of held-out world images without the
                  targets: the other evaluation split (tuning for test targets, test for tuning ones)
  lucent, maco, fourier
                  pixel-space feature inversion with lucent's render_vis (Fourier image, decorrelated
                  colours) and Horama's MACO and Fourier methods, each minimising the squared feature
                  distance in about 259 network passes; MACO's magnitude spectrum is the mean one of the
                  exemplar pool. They need the extra featscope[peers]; a row whose package is missing is
                  skipped with a one-line note
  accentuation    Horama's Feature Accentuation (Fourier's settings, its L2 penalty to the seed image), from
                  the plain sample of the target's decode seed (the first preset's sampler and steps)
  evals/image and s/image of best-of-n and exemplars are those of one target on its own (all N samples,
  the whole pool's features); the bench makes them once and shares them across targets.
Target i is the world image i of --seed, decoded from seed --seed + i. The targets are world scenes of the
backbone's image size: shapes32 for a 32 px backbone (world:ddpm), patterns64 for a 64 px one (world:latent).

writes into --out: results.json (every number, per target too, and the config), results.md (the tables),
agreement.png, distance_vs_evaluations.png, samples.png, grid.png (one column per target, one row per method,
the targets first) and images/ (targets and decoded best images).

example:
  featscope bench decode --n 32 --extractors world:shape-net,world:color-net --presets fast,faster --out runs/bench
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``bench`` with its ``decode``, ``investigate``, ``featinv`` and ``visualize`` sub-commands."""
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="KIND")
    _add_decode(bsub)
    _add_investigate(bsub)
    _add_featinv(bsub)
    _add_visualize(bsub)


EPILOG_VISUALIZE = """\
units: a class logit is a channel of the output of the network's last linear layer, a neuron a channel of its
input (the penultimate features). Each row makes --samples images per unit (sample k of unit t from seed
--seed + t * samples + k; the classes come first):
  featscope       the end-to-end neuron visualisation (featscope.investigate.cores.neuron, the core of
                  featscope investigate neuron) with the backbone's neuron defaults (world:ddpm: 40
                  iterations), its best iterate; a class logit is a neuron of the logits layer
  unguided        featscope's plain sample, iteration 0 of the same run (comes with featscope)
  lucent          lucent's render_vis with objectives.channel, Fourier image, decorrelated colours
  maco            Horama's MACO, its magnitude spectrum the mean one of the tuning split
  accentuation    Horama's Feature Accentuation, from featscope's plain sample of the same seed
  exemplars       the --samples images of the tuning split with the highest value
  The peers spend about featscope's network evaluations per image (lucent one per step, Horama one per crop)
  and need the extra featscope[peers]; a row whose package is missing is skipped with a one-line note.
what the numbers mean (one table for the class logits, one for the neurons; rates over images with their
95% Wilson interval and counts):
  reached         class: the network's probability of the class > 0.5; neuron: activation >= 3x the
                  channel's mean over the test split's first 512 images
  >= best exemplar  the logit or activation is at least the highest over the tuning split
  valid           the world oracle finds one clear object (is it an image of the world at all)
  shows class     the oracle reads the class from the image (world:shape-net: its shape)
  evals/image     forward passes of the network per image (exemplars: the whole pool, once)
  s/image         wall-clock seconds per image (exemplars: the pool's pass)
writes into --out: results.json (every number, per image too), results.md (the tables), grid.png (one row
per method, one column per class and neuron, the first sample) and images/ROW/UNIT_K.png.

example:
  featscope bench visualize --samples 2 --out runs/visualize
  featscope bench visualize --classes star --channels none --compare featscope,exemplars --out runs/star
"""


def _add_common(parser: argparse.ArgumentParser, what: str) -> None:
    """-n, --seed, --out and --overwrite."""
    t = parser.add_argument_group("targets")
    t.add_argument("-n", "--n", type=int, default=32, help=f"number of {what} (default: %(default)s)")
    t.add_argument(
        "--split",
        choices=("test", "tuning"),
        default="test",
        help="held-out world images to use as targets: test (report here) or tuning (choose settings here); none "
        "was in any shipped model's training (docs/evaluation.md) (default: %(default)s)",
    )
    t.add_argument(
        "--seed",
        type=int,
        help="instead of a split, the first images of this world stream (seed 0 is world:ddpm's training pool); "
        "also the first decoding seed",
    )
    o = parser.add_argument_group("output")
    add_output(o, "folder for results.json, results.md and the plots", overwrite="replace the results already in --out")


def _add_extractor_weights(group: argparse._ArgumentGroup, which: str, example: str) -> None:
    """--extractor-weights: local weights files for ``which`` networks (read by :func:`weights_files`)."""
    group.add_argument("--extractor-weights", default="", metavar="SPEC=FILE,SPEC=FILE",
                       help=f"local weights files for {which} instead of their published ones, e.g. {example} "
                            "(default: none)")  # fmt: skip


def _add_decode(bsub: argparse._SubParsersAction) -> None:
    """the universal decoder: feature distance and attributes read back by the oracle.

    Decode fresh world images from their features with each extractor and preset (and an unguided baseline), then
    score the decoded images against the targets.
    """
    from featscope.solvers.configs import PRESETS, UniversalConfig

    p = sub_command(bsub, _add_decode, EPILOG_DECODE)
    _add_common(p, "world target images")
    m = p.add_argument_group("models")
    add_backbone(m)
    m.add_argument(
        "--extractors",
        default="world:shape-net,world:color-net",
        metavar="SPEC,SPEC",
        help="networks under study, comma-separated (default: %(default)s)",
    )
    _add_extractor_weights(m, "some of --extractors", "world:shape-net-64=net.safetensors")
    s = p.add_argument_group("solver (each preset, then any override, for every row; unguided rows: no guidance)")
    s.add_argument(
        "--presets",
        default="fast",
        metavar="NAME,NAME",
        help=f"{', '.join(PRESETS)} (default: %(default)s)",
    )
    s.add_argument("--no-unguided", action="store_true", help="skip the unguided baseline rows (no guidance)")
    s.add_argument(
        "--compare",
        default="",
        metavar="ROW,ROW",
        help="rows beside featscope's: any of best-of-n, exemplars, lucent, maco, fourier, accentuation "
        "(default: none)",
    )
    add_knobs(p, s, UniversalConfig, exclude=("prompt", "guidance_scale", "stop_distance"), defaults=PRESETS["fast"])
    add_runtime_options(p)


def _add_investigate(bsub: argparse._SubParsersAction) -> None:
    """counterfactuals, classifier differences and neurons (end-to-end solver).

    The investigation measurements: counterfactuals circle -> square of -n images, with and without background
    regularisers, and word swaps from the same inversions (each with minimality and the inversion's
    reconstruction error); shape-net vs spurious-net differences, n/8 per shape, with unguided baselines (n per
    shape, and as many as the guided network evaluations); neurons (--channels, default 0-3), n/8 each; neuron
    counterfactuals of the counterfactual's images (the first of --channels raised), from the reconstruction with
    background regularisers and from DiG-IN's re-injection start (with minimality). On a 64 px backbone the
    scenes are patterns64 and the networks shape-net-64 and tag-net (its shortcut: the tag).
    """
    from featscope.solvers.configs import EndToEndConfig

    p = sub_command(bsub, _add_investigate)
    _add_common(p, "counterfactual images; n/8 difference and neuron samples")
    p.add_argument("--methods", metavar="NAME,NAME",
                   help="any of counterfactual, word-swap, difference, neuron, neuron-images, comma-separated "
                        "(default: all five)")  # fmt: skip
    p.add_argument("--rows", metavar="ROW;ROW",
                   help="counterfactual and neuron-images rows, ';'-separated (default: all): no regulariser; "
                        "background regularisers; background regularisers, no mask; background regularisers, "
                        "cross-attention mask; word-swap start, background regularisers, cross-attention mask; "
                        "reconstruction start, background regularisers, no mask; re-injection start, "
                        "cross-attention mask, no regularisers or cutouts")  # fmt: skip
    add_backbone(p)
    m = p.add_argument_group("networks (defaults: the scene kind's, from the backbone's image size)")
    m.add_argument("--first", metavar="SPEC",
                   help="the network under study (default: world:shape-net at 32 px, world:shape-net-64 "
                        "at 64 px)")  # fmt: skip
    m.add_argument("--second", metavar="SPEC",
                   help="the difference's second network (default: world:spurious-net at 32 px, world:tag-net at "
                        "64 px); the shortcut read is the kind's: its colour, or the tag")  # fmt: skip
    _add_extractor_weights(m, "--first or --second", "world:tag-net=net.safetensors")
    p.add_argument("--batch", type=int, default=8, metavar="B", help="counterfactual images per batch (default: 8)")
    p.add_argument("--channels", default="0,1,2,3", metavar="C,C",
                   help="neurons: channels of the network's penultimate layer, 0-127; neuron-images: the first "
                        "(default: 0,1,2,3)")  # fmt: skip
    add_knobs(p, p.add_argument_group("end-to-end solver (defaults: the backbone's, as investigate)"), EndToEndConfig)
    add_runtime_options(p)


def _add_featinv(bsub: argparse._SubParsersAction) -> None:
    """the embedded FeatInv model next to the universal decoder on the same targets.

    Decode world targets from a FeatInv model's layer with FeatInv (one row per step count) and with the universal
    decoder's --preset, in one process.
    """
    from featscope.solvers.configs import PRESETS

    p = sub_command(bsub, _add_featinv)
    _add_common(p, "world target images")
    p.add_argument("--model", metavar="DIR", help="FeatInv model folder (default: the embedded world model)")
    p.add_argument(
        "--preset",
        "--presets",
        default="fast",
        metavar="NAME",
        help=f"the universal decoder's preset: {', '.join(PRESETS)}; of a list, the first (default: %(default)s)",
    )
    p.add_argument(
        "--featinv-steps",
        default="50",
        metavar="T,T",
        help="DDIM step counts of FeatInv, one row each (default: 50, as published)",
    )
    add_quiet(p)


def _add_visualize(bsub: argparse._SubParsersAction) -> None:
    """class logits and neurons: featscope's neuron visualisation beside lucent, MACO, Feature Accentuation, exemplars.

    Visualise each class logit and each neuron of the penultimate layer of --net --samples times with every row of
    --compare, and score every image the same way: the logit or activation reached, the oracle's validity and, for
    a class, whether the oracle reads that class; with network evaluations and seconds per image.
    """
    from featscope.solvers.configs import EndToEndConfig, endtoend_defaults

    p = sub_command(bsub, _add_visualize, EPILOG_VISUALIZE)
    u = p.add_argument_group("units")
    u.add_argument("--net", default="world:shape-net@fc", metavar="SPEC",
                   help="the network under study (default: %(default)s)")  # fmt: skip
    u.add_argument("--classes", metavar="C,C",
                   help="class logits to visualise, names or indices; none for no class "
                        "(default: every class)")  # fmt: skip
    u.add_argument("--channels", default="0,1,2,3", metavar="C,C",
                   help="neurons: channels of the input of the last linear layer; none for no neuron "
                        "(default: %(default)s)")  # fmt: skip
    u.add_argument("--samples", type=int, default=2, metavar="N",
                   help="images per class and per neuron, for every row (default: %(default)s)")  # fmt: skip
    u.add_argument("--seed", type=int, default=0,
                   help="first seed: sample k of unit t uses seed + t * samples + k "
                        "(default: %(default)s)")  # fmt: skip
    r = p.add_argument_group("rows")
    r.add_argument("--compare", default=",".join(VISUALIZE_ROWS), metavar="ROW,ROW",
                   help=f"any of {', '.join(VISUALIZE_ROWS)} (default: all)")  # fmt: skip
    add_backbone(r)
    r.add_argument("--prompt", choices=("empty", "chosen"), default="empty",
                   help="featscope's prompt: empty, or chosen per unit as investigate neuron does (the candidate "
                        "word whose plain samples raise it most; default: %(default)s)")  # fmt: skip
    o = p.add_argument_group("output")
    add_output(o, "folder for results.json, results.md, grid.png and images/",
               overwrite="replace the results already in --out")  # fmt: skip
    solver = p.add_argument_group("featscope's end-to-end solver (defaults: the backbone's neuron defaults, as "
                                  "featscope investigate neuron; world:ddpm's shown)")  # fmt: skip
    add_knobs(p, solver, EndToEndConfig, defaults=endtoend_defaults("world:ddpm", "neuron"))
    g = p.add_argument_group("runtime")
    add_device(g)
    add_quiet(g)


def run(args: argparse.Namespace) -> int:
    """Run the bench sub-command and print its results.md."""
    handlers = {"decode": _run_decode, "investigate": _run_investigate, "featinv": _run_featinv,
                "visualize": _run_visualize}  # fmt: skip
    return handlers[args.bench_command](args)


def _run_decode(args: argparse.Namespace) -> int:
    from featscope.bench import run_bench

    run_bench(
        args.out,
        **pick(args, *TARGETS, "backbone", "device", "dtype", "quiet", "overwrite"),
        extractors=names(args.extractors),
        extractor_weights=weights_files(args.extractor_weights),
        presets=names(args.presets),
        include_unguided=not args.no_unguided,
        compare=names(args.compare),
        settings=knobs(args),
    )
    print((Path(args.out) / "results.md").read_text())
    plots = "agreement.png, distance_vs_evaluations.png, samples.png, grid.png"
    print(f"wrote {args.out}/ (results.json, results.md, {plots})")
    return 0


def weights_files(text: str) -> dict[str, str]:
    """The ``SPEC=FILE`` items of --extractor-weights as {spec: file}."""
    files = {}
    for item in names(text):
        spec, equals, path = item.partition("=")
        if not (equals and spec.strip() and path.strip()):
            example = "e.g. world:shape-net=net.safetensors"
            raise FeatscopeError(f"--extractor-weights takes SPEC=FILE items, {example}, not {item!r}")
        files[spec.strip()] = path.strip()
    return files


def _run_investigate(args: argparse.Namespace) -> int:
    from featscope.bench.investigation import run_investigation_bench

    methods = {} if args.methods is None else {"methods": names(args.methods)}
    if args.rows is not None:
        methods["rows"] = [row.strip() for row in args.rows.split(";") if row.strip()]
    run_investigation_bench(
        args.out, **methods, **pick(args, *TARGETS, "backbone", "first", "second", "batch", "device", "quiet",
                                    "overwrite"),
        extractor_weights=weights_files(args.extractor_weights),
        channels=numbers(args.channels, int, "--channels", "channel numbers like 0,1,2,3"), **knobs(args),
    )  # fmt: skip
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/ (results.json, results.md, image grids)")
    return 0


def _units(text: str | None) -> list[str] | None:
    """The items of --classes or --channels: None for the default, [] for none."""
    if text is None:
        return None
    items = names(text)
    return [] if items == ["none"] else items


def _run_visualize(args: argparse.Namespace) -> int:
    from featscope.bench.visualization import run_visualization_bench

    channels = _units(args.channels) or []
    if not all(c.isdigit() for c in channels):
        raise FeatscopeError(f"--channels takes channel numbers like 0,1,2,3 or none, not {args.channels!r}")
    run_visualization_bench(
        args.out,
        **pick(args, "net", "samples", "seed", "backbone", "device", "quiet", "overwrite"),
        classes=_units(args.classes),
        channels=[int(c) for c in channels],
        compare=names(args.compare),
        prompt="" if args.prompt == "empty" else args.prompt,
        **knobs(args),
    )
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/ (results.json, results.md, grid.png, images/)")
    return 0


def _run_featinv(args: argparse.Namespace) -> int:
    from featscope.bench.featinv import run_featinv_bench

    counts = names(args.featinv_steps)
    if not all(x.isdigit() and int(x) > 0 for x in counts):
        raise FeatscopeError(f"--featinv-steps takes positive step counts like 50,10,5, not {args.featinv_steps!r}")
    run_featinv_bench(
        args.out,
        **pick(args, "model", *TARGETS, "quiet", "overwrite"),
        preset=args.preset.split(",")[0].strip(),
        featinv_steps=[int(x) for x in counts],
    )
    print((Path(args.out) / "results.md").read_text())
    return 0
