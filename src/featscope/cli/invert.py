"""``featscope invert``: null-text inversion of real images (x_T and per-step null texts, for counterfactuals).

Null-text inversion: per image out/<item>/x_T.pt, null_texts.pt, target.png, reconstruction.png, prompt.txt,
metrics.json (reconstruction error) and config.yaml.
"""

from __future__ import annotations

import argparse

from featscope.cli.options import (
    add_images_options,
    add_investigate_common,
    add_knobs,
    knobs,
    pick,
    print_summary,
    selected_images,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``invert``: images, and one option per knob of :class:`~featscope.investigate.settings.InvertSettings`
    (the captions and the inversion's settings)."""
    from featscope.investigate.settings import InvertSettings

    add_images_options(p)
    add_knobs(p, p, InvertSettings)
    add_investigate_common(p, out="runs/invert")


def run(args: argparse.Namespace) -> int:
    """Invert the images and print the summary."""
    from featscope.investigate import invert

    common = pick(args, "out", "backbone", "device", "quiet")
    summary = invert(selected_images(args), **knobs(args), **common)
    print_summary(summary, args.out)
    return 0
