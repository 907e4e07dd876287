"""``featscope invert``: null-text inversion of real images (x_T and per-step null texts, for counterfactuals).

Null-text inversion: per image out/<item>/x_T.pt, null_texts.pt, target.png, reconstruction.png, prompt.txt,
metrics.json (reconstruction error) and config.yaml.
"""

from __future__ import annotations

import argparse

from featscope.cli.options import (
    add_caption_model,
    add_images_options,
    add_investigate_common,
    dataset_selection,
    pick,
    print_summary,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``invert``: images, captions and the inversion's settings."""
    add_images_options(p)
    p.add_argument("--prompt", help="caption of every image ({label} = class); default: IMAGE.txt or the "
                   "records.jsonl beside it, --caption-model or template")  # fmt: skip
    p.add_argument("--prompt-template", metavar="TEXT", help="caption from a dataset's class name, with {label}")
    add_caption_model(p)
    p.add_argument("--steps", type=int, default=20, dest="num_steps", help="DDIM steps (default: %(default)s)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: %(default)s)")
    p.add_argument("--inner-steps", type=int, default=10, help="Adam steps per DDIM step (default: %(default)s)")
    add_investigate_common(p, out="runs/invert")


def run(args: argparse.Namespace) -> int:
    """Invert the images and print the summary."""
    from featscope.investigate import invert

    caption = pick(args, "prompt", "prompt_template", "caption_model", "num_steps", "guidance_scale", "inner_steps")
    common = pick(args, "out", "backbone", "device", "quiet")
    summary = invert(args.images, **caption, **dataset_selection(args), **common)
    print_summary(summary, args.out)
    return 0
