"""Choose the peer rows' settings (lucent, Horama MACO, Fourier, Feature Accentuation) for 32 px world images on
the tuning split.

Each setting inverts the first --n tuning images' features with shape-net and color-net through the same
functions the bench rows call; one JSON line per (extractor, peer, setting) with the median relative distance and
the oracle's valid rate. The bench's settings (featscope.bench.peers) are the lowest median distance at about 259
network passes per image. Feature Accentuation starts from each target's plain sample of ``fast``'s sampler
(DDIM, 50 steps, decode seed = target index), as the bench row does.

    python benchmarks/scripts/peer_tuning.py --n 8 --out benchmarks/records/peers/tuning.jsonl
    python benchmarks/scripts/peer_tuning.py --n 8 --peers accentuation --out benchmarks/records/peers/tuning.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.bench import peers
from featscope.bench.baselines import exemplar_pool, unguided_samples
from featscope.bench.run import features_of, pair_reference, score_samples
from featscope.bench.stats import proportion
from featscope.bench.targets import TargetSource
from featscope.extractors import load_extractor
from featscope.images import to_tensor

BOX = (0.8, 0.9)
GRID = {
    "lucent": [{"steps": 259, "lr": lr, "jitter": j} for lr in (0.02, 0.05, 0.1) for j in (0, 2)],
    "maco": [{"steps": 65, "crops": 4, "lr": lr, "box_size": box, "noise": 0.05}
             for lr in (0.1, 1.0, 5.0) for box in (BOX, (0.4, 0.5))],  # fmt: skip
    "fourier": [{"steps": 65, "crops": 4, "lr": lr, "box_size": box, "noise": 0.05}
                for lr in (0.1, 1.0, 5.0) for box in (BOX, (0.4, 0.5))],  # fmt: skip
    "accentuation": [{"steps": 65, "crops": 4, "lr": lr, "box_size": box, "noise": 0.05, "penalty": penalty,
                      "decay_power": 1.5}
                     for lr in (0.1, 1.0, 5.0) for box in (BOX, (0.95, 1.0)) for penalty in (0.0, 1.0)],  # fmt: skip
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--peers", default="lucent,maco,fourier")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = TargetSource("tuning")
    images, records = source.images(args.n)
    spectrum = peers.maco_spectrum(exemplar_pool(source, images)[0])
    backbone = load_backbone("world:ddpm", device="cpu")
    starts = to_tensor(unguided_samples(backbone, args.n, source.noise_seed, sampler="ddim", num_steps=50))
    folder = Path(tempfile.mkdtemp())
    with args.out.open("a") as log:
        for spec in ("world:shape-net", "world:color-net"):
            extractor = load_extractor(spec)
            targets, reference = features_of(extractor, images), pair_reference(extractor, 0)
            for name in args.peers.split(","):
                for settings in GRID[name]:
                    with contextlib.redirect_stderr(io.StringIO()):
                        if name == "lucent":
                            out, evaluations = peers.lucent_invert(extractor, targets, 0, settings)
                        else:
                            out, evaluations = peers.horama_invert(
                                name, extractor, targets, 0, spectrum, folder, settings,
                                starts=starts if name == "accentuation" else None,
                            )
                    samples = score_samples(out, targets, records, extractor, reference)
                    line = {"split": "tuning", "n": args.n, "extractor": spec, "peer": name, "settings": settings,
                            "evaluations": evaluations,
                            "relative_distance_median": float(np.median([s["relative_distance"] for s in samples])),
                            "valid": proportion(sum(s["valid"] for s in samples), len(samples))}  # fmt: skip
                    print(json.dumps(line), file=log, flush=True)
                    print(spec, name, settings, line["relative_distance_median"], line["valid"]["rate"], flush=True)


if __name__ == "__main__":
    main()
