"""``featscope layers``: list a network's layer names (for SPEC@layer).

List the layers of a network, with output shapes, to pick SPEC@layer.
"""

from __future__ import annotations

import argparse

from featscope.cli.options import add_extractor_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``layers``: the network and its local weights."""
    p.add_argument(
        "spec",
        metavar="SPEC",
        help="network, as --extractor takes it (e.g. torchvision:resnet50); a trailing @SIZEpx (@288px, @HxWpx) "
        "sets its input size, so the shapes are those at that size (e.g. timm:convnext_base@288px)",
    )
    add_extractor_weights(p)


def run(args: argparse.Namespace) -> int:
    """Print one line per layer: name, kind and output shape."""
    from featscope.extractors import list_layers

    for name, kind, shape in list_layers(args.spec, weights=args.extractor_weights):
        print(f"{name:50s} {kind:28s} {tuple(shape) if shape is not None else ''}")
    return 0
