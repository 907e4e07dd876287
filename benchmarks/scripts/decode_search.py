"""Search decoding settings on the world's tuning split, or measure chosen ones once on the test split.

Every decode goes through ``featscope.decoding.decode_features`` (what ``featscope decode`` and the bench run) and
is scored with the bench's own functions (``featscope.bench.run``). One JSON line per (setting, network,
target) is appended to ``--out``; a rerun skips the lines already there, so a long run (``reference``) can be
stopped and resumed, and a cut-short run still leaves whole targets.

Cost convention: ``network_evaluations`` counts every pass of the network under study (guidance, tracking,
inner and backward steps); ``unet_equivalents`` counts UNet forward passes plus two per UNet backward pass
(``UniversalConfig.unet_equivalents``); neither counts the two passes the bench makes to score the result.

    python benchmarks/scripts/decode_search.py run --split tuning --n 8 --configs all \\
        --out benchmarks/records/decode-search/search.jsonl
    python benchmarks/scripts/decode_search.py summary benchmarks/records/decode-search/search.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from featscope.backbones import load_backbone
from featscope.bench.metrics import median_interval
from featscope.bench.run import features_of, pair_reference, score_samples
from featscope.bench.stats import proportion
from featscope.decoding import decode_features
from featscope.extractors import load_extractor
from featscope.images import to_uint8
from featscope.solvers.configs import PRESETS, UniversalConfig
from featscope.world import CLASSIFIER_TASKS
from featscope.world.splits import split_images

NETWORKS = ("world:shape-net", "world:color-net", "world:spurious-net")
BUDGET = 259  # 1% of reference's 25,920 network evaluations per image

_D = dict(sampler="ddim", num_steps=50, guidance_weight=0.1, recurrence=2, early_recurrence=2)
_DPM = dict(_D, sampler="dpmpp")
_FAST = dict(_D, schedule_power=1.5)
_LAST = dict(_FAST, late_recurrence=1, late_steps=1, backward_from=49)  # K 1 and backward steps in the last step
_MPGD = dict(sampler="ddim", guidance_weight=0.0, recurrence=1, early_recurrence=1, late_recurrence=1)
# The search space: one family per line group (forward guidance on x_t, DPM-Solver++, step schedule, MPGD /
# x0 guidance with inner iterations, recurrence, adaptive stopping, backward guidance as in `refine`).
SEARCH: dict[str, dict] = {
    "ddim50-K2-wg0.1 (old fast)": _D,
    "ddim50-K2-wg0.1-unguided": dict(_D, guidance_weight=0.0),
    "ddim50-K2-wg0.2": dict(_D, guidance_weight=0.2),
    "dpmpp50-K2-wg0.1": _DPM,
    "ddim50-K2-wg0.1-rho1.5": dict(_D, schedule_power=1.5),
    "ddim60-K2-wg0.1-patience8": dict(_D, num_steps=60, patience=8),
    "mpgd-ddim50-mu0.1-N2-from20": dict(_MPGD, num_steps=50, x0_weight=0.1, x0_steps=2, x0_from=20),
    "mpgd-ddim50-mu0.3-N4-from30": dict(_MPGD, num_steps=50, x0_weight=0.3, x0_steps=4, x0_from=30),
    "tfg-ddim50-K2-wg0.1-mu0.1-N1-from40": dict(_D, x0_weight=0.1, x0_steps=1, x0_from=40),
    "tfg-ddim50-K2-wg0.1-mu0.02-N5-from45": dict(_D, x0_weight=0.02, x0_steps=5, x0_from=45),
    "tfg-ddim50-K2-wg0.1-mu0.05-N2-from38": dict(_D, x0_weight=0.05, x0_steps=2, x0_from=38),
    "tfg-ddim25-K2-wg0.1-mu0.05-N3-from15": dict(_D, num_steps=25, x0_weight=0.05, x0_steps=3, x0_from=15),
    "tfg-dpmpp25-K2-wg0.1-mu0.1-N2-from15": dict(_DPM, num_steps=25, x0_weight=0.1, x0_steps=2, x0_from=15),
    "bwd-ddim25-K2-wg0.1-m25-lr0.003-from22": dict(
        _D, num_steps=25, backward_steps=25, backward_lr=0.003, backward_from=22
    ),
    "bwd-ddim25-K2-wg0.1-m25-lr0.001-from22": dict(
        _D, num_steps=25, backward_steps=25, backward_lr=0.001, backward_from=22
    ),
    "bwd-ddim25-K1-wg0.1-m40-lr0.003-blur1-from20": dict(
        _D,
        num_steps=25,
        recurrence=1,
        early_recurrence=1,
        backward_steps=40,
        backward_lr=0.003,
        backward_blur=1.0,
        backward_from=20,
    ),
    # Second screen: the `fast` chain (rho 1.5) with backward guidance only at its end, within the budget.
    "bwd-fast-m29-lr0.003-from49": dict(_FAST, backward_steps=29, backward_lr=0.003, backward_from=49),
    "bwd-fast-m29-lr0.001-from49": dict(_FAST, backward_steps=29, backward_lr=0.001, backward_from=49),
    "bwd-fast-m14-lr0.003-from48": dict(_FAST, backward_steps=14, backward_lr=0.003, backward_from=48),
    "bwd-fast-Klast1-m58-lr0.003-from49": dict(_LAST, backward_steps=58, backward_lr=0.003),
    # ... with the L1 artifact penalty (backward_sparsity): only elements with a large gradient move.
    **{
        f"bwd-fast-Klast1-m58-lr0.003-from49-sparse{s}": dict(
            _LAST, backward_steps=58, backward_lr=0.003, backward_sparsity=s
        )
        for s in (0.5, 1.0, 2.0)
    },
    "bwd-fast-m29-lr0.003-from49-sparse1.0": dict(
        _FAST, backward_steps=29, backward_lr=0.003, backward_from=49, backward_sparsity=1.0
    ),
    # ... scoring the updated estimate in the last step only (track_from 49): 100 evaluations more for Adam.
    "fast-track49": dict(_FAST, track_from=49),
    **{
        f"bwd-fast-track49-Klast1-m159-lr{lr}-from49-sparse{s}": dict(
            _LAST, track_from=49, backward_steps=159, backward_lr=lr, backward_sparsity=s
        )
        for lr, s in (
            (0.003, 1.0),
            (0.003, 1.5),
            (0.001, 1.0),
            (0.001, 0.5),
            (0.003, 2.0),
            (0.003, 2.5),
            (0.01, 2.0),
            (0.01, 3.0),
        )  # fmt: skip
    },
}


def config_of(name: str) -> UniversalConfig:
    """A preset by name, or a named point of the search space."""
    if name in PRESETS:
        return PRESETS[name]
    return UniversalConfig().with_overrides(**SEARCH[name])


def done_keys(out: Path) -> set[tuple]:
    if not out.exists():
        return set()
    return {(r["config"], r["extractor"], r["index"]) for r in map(json.loads, out.read_text().splitlines())}


def run(args: argparse.Namespace) -> None:
    """Decode and score every (setting, network, target) not yet in ``--out``, ``--batch`` targets at a time."""
    torch.set_num_threads(args.threads)
    names = list(SEARCH) if args.configs == ["all"] else args.configs
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone("world:ddpm", device="cpu")
    images, records = split_images(args.n, args.split)
    nets = {spec: load_extractor(spec, device="cpu") for spec in args.networks}
    targets = {spec: features_of(net, images) for spec, net in nets.items()}
    scale = {spec: pair_reference(net, 0) for spec, net in nets.items()}
    done = done_keys(out)
    for name in names:
        config = config_of(name)
        for start in range(0, args.n, args.batch):
            for spec, net in nets.items():
                chunk = [i for i in range(start, min(start + args.batch, args.n)) if (name, spec, i) not in done]
                if not chunk:
                    continue
                output = decode_features(backbone, net, targets[spec][chunk], config, chunk, quiet=True)
                scored = score_samples(
                    to_uint8(output.best), targets[spec][chunk], [records[i] for i in chunk], net, scale[spec]
                )
                with out.open("a") as f:
                    for i, sample in zip(chunk, scored, strict=True):
                        line = {
                            "config": name, "settings": asdict(config), "extractor": spec, "split": args.split,
                            "index": i, "seed": i, "attribute": CLASSIFIER_TASKS[spec.split(":")[1]],
                            "network_evaluations": output.evaluations, "unet_equivalents": output.unet_equivalents,
                            "seconds_per_image": output.seconds / len(chunk), "threads": args.threads,
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **{k: sample[k] for k in ("relative_distance", "background_deviation", "valid",
                                                      "agreement", "pixel_noise")},
                        }  # fmt: skip
                        f.write(json.dumps(line) + "\n")
                print(f"{name} {spec} targets {chunk[0]}-{chunk[-1]}: {output.seconds:.0f} s", flush=True)


def summarise(lines: list[dict]) -> list[dict]:
    """Per (setting, network) and per setting over all networks: median relative distance with its 95%
    interval, background deviation, the network's attribute kept, valid images, cost per image; n each."""
    groups: dict[tuple, list[dict]] = {}
    for line in lines:
        groups.setdefault((line["config"], line["extractor"]), []).append(line)
        groups.setdefault((line["config"], "all"), []).append(line)
    rows = []
    for (name, spec), group in groups.items():
        n = len(group)
        rows.append({
            "config": name, "extractor": spec, "n": n, "split": group[0]["split"],
            "relative_distance": median_interval([g["relative_distance"] for g in group]),
            "background_deviation": median_interval([g["background_deviation"] for g in group]),
            "kept": proportion(sum(g["agreement"][g["attribute"]] for g in group), n),
            "valid": proportion(sum(g["valid"] for g in group), n),
            "network_evaluations": float(np.mean([g["network_evaluations"] for g in group])),
            "unet_equivalents": float(np.mean([g["unet_equivalents"] for g in group])),
            "seconds_per_image": float(np.mean([g["seconds_per_image"] for g in group])),
            "settings": group[0]["settings"],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    """The summary as a markdown table."""
    head = ("| setting | network | n | rel. distance median [95%] | bg dev. median | attribute kept | valid | "
            "evals/image | UNet-eq./image |\n|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip

    def rate(p: dict) -> str:
        return f"{p['rate']:.0%} [{p['low']:.0%}, {p['high']:.0%}]"

    body = "".join(
        f"| {r['config']} | {r['extractor']} | {r['n']} | {r['relative_distance']['median']:.3g} "
        f"[{r['relative_distance']['low']:.3g}, {r['relative_distance']['high']:.3g}] | "
        f"{r['background_deviation']['median']:.2f} | {rate(r['kept'])} | {rate(r['valid'])} | "
        f"{r['network_evaluations']:.0f} | {r['unet_equivalents']:.0f} |\n"
        for r in rows
    )
    return head + body


def summary(args: argparse.Namespace) -> None:
    lines = [json.loads(x) for path in args.files for x in Path(path).read_text().splitlines()]
    rows = summarise(lines)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="decode and score; appends one line per target to --out")
    r.add_argument("--split", choices=("tuning", "test"), default="tuning")
    r.add_argument("--n", type=int, default=8, help="targets per network")
    r.add_argument("--configs", nargs="+", default=["all"], help="preset names or search-space names; all = SEARCH")
    r.add_argument("--networks", nargs="+", default=list(NETWORKS))
    r.add_argument("--batch", type=int, default=8, help="targets decoded together")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--out", required=True)
    s = sub.add_parser("summary", help="tables of one or more --out files")
    s.add_argument("files", nargs="+")
    s.add_argument("--json", help="also write the summary rows here")
    args = parser.parse_args()
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    main()
