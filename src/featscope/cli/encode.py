"""``featscope encode``: save the feature of an image as a target tensor.

Compute a network's feature of one or more images and save it (.safetensors, .pt or .npy), to use later as --target.
"""

from __future__ import annotations

import argparse

from featscope.cli.options import add_model_options, add_output, add_runtime_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``encode``: images, the feature file to write, the extractor and the runtime."""
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images (PNG/JPEG); several give a batch of features")
    add_output(p, "feature file to write (.safetensors/.pt/.npy)", metavar="FILE")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="resize images to this square size first (default: as the extractor preprocesses)",
    )
    add_model_options(p, backbone=False)
    add_runtime_options(p)


def run(args: argparse.Namespace) -> int:
    """Encode the images and write the feature file."""
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
