"""Run chosen rows of the investigation bench's counterfactual measurement (``featscope bench investigate``'s
``counterfactual_bench``, at the backbone's defaults) and write ``results.json`` as the bench does.

Used to add the "background regularisers, no mask" row to a bench run that had only the other two:

    OMP_NUM_THREADS=1 python benchmarks/scripts/investigate_counterfactual_rows.py --split test --n 8 \\
        --row "background regularisers, no mask" --out DIR
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from featscope.backbones import load_backbone
from featscope.bench.investigation import ROWS, _config, counterfactual_bench
from featscope.bench.targets import TargetSource
from featscope.extractors import load_extractor
from featscope.runs import atomic_write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="test", choices=("test", "tuning"))
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--row", action="append", choices=tuple(ROWS), help="a row to run (repeat; default: every row)")
    p.add_argument("--backbone", default="world:ddpm")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _config({}, args.backbone)
    backbone = load_backbone(args.backbone, device="cpu")
    net = load_extractor("world:shape-net", device="cpu")
    source = TargetSource(args.split, None)
    tic = time.time()
    entry = counterfactual_bench(backbone, net, n=args.n, source=source, start="circle", target="square",
                                 config=config, batch=8, out=out, quiet=True, rows=args.row or tuple(ROWS))  # fmt: skip
    entry["seconds"] = time.time() - tic
    config_record = {"n": args.n, **source.record(), "backbone": args.backbone, "solver": asdict(config)}
    atomic_write_json(out / "results.json", {"config": config_record, "results": {"counterfactual": entry}})


if __name__ == "__main__":
    main()
