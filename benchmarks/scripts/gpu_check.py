"""One-shot GPU check: seconds and peak memory of every method at real scale, within a time budget.

    python benchmarks/scripts/gpu_check.py                  # one GPU, about 8 minutes
    python benchmarks/scripts/gpu_check.py --tiny --out DIR  # the same code paths on CPU, tiny models, seconds

Rows (random weights, exact architectures; see ``plan``):
- ``guided``: seconds per guided iteration of the universal solver (``solve_universal``, what ``featscope
  decode`` runs) and peak memory, SD-1.4 size at 512 px, with ResNet-50, CLIP RN50 and ViT-H/14, in fp32,
  bf16 and fp16, batch 1 and 4; then ResNet-50 with ``--channels-last``, ``--low-memory`` and ``--compile``;
- ``endtoend``: one iteration of ``investigate.cores.counterfactual`` in the published setting (20 DDIM
  steps, CFG 3, 16 cutouts; the null-text inversion is given, not timed);
- ``featinv-train``: one FeatInv training step (``featinv.train``) at miniSD size (SD 1.4's architecture at
  256 px), ResNet-50 layer4, batch 8; ``featinv-reconstruct``: one 50-step reconstruction (``featinv.reconstruct``);
- ``per-image``: seconds per decoded image (``decoding.decode_features``) for the ``reference`` and the
  default preset; where a full image does not fit the budget (reference: 12,960 iterations) it is
  extrapolated from the measured seconds per iteration, and the record says so (``extrapolated``).

Each row is one JSON line in ``OUT/<device>-<date>.jsonl`` with the device name; a row that does not fit the
remaining budget, or fails (out of memory, no compiler), is written with ``skipped`` and the reason.
``--tiny`` uses tiny random models of the same classes at 16 px (a tiny classifier at 32 px for the networks).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from guided_iteration import device_name, time_guided  # noqa: E402
from sd_random import random_sd  # noqa: E402

from featscope import featinv  # noqa: E402
from featscope.backbones import Backbone  # noqa: E402
from featscope.decode_run import DEFAULT_PRESET  # noqa: E402
from featscope.decoding import decode_features  # noqa: E402
from featscope.devices import DTYPES, peak_memory_mb, resolve_device  # noqa: E402
from featscope.extractors import Extractor, load_extractor  # noqa: E402
from featscope.investigate.cores import counterfactual  # noqa: E402
from featscope.solvers.configs import EndToEndConfig, preset  # noqa: E402
from featscope.speed import SpeedOptions, apply_speed  # noqa: E402

TINY_NET = f"{Path(__file__).parent / 'sd_random.py'}:tiny_classifier"
EXTRACTORS = {
    "full": {"resnet50": "torchvision:resnet50", "clip-rn50": "clip:RN50", "vit-h14": "torchvision:vit_h_14"},
    "tiny": {"resnet50": TINY_NET, "clip-rn50": TINY_NET, "vit-h14": TINY_NET},
}
FEATINV_LAYER = {"full": "torchvision:resnet50@layer4", "tiny": f"{TINY_NET}@features"}
SCALE = {"full": ("v1", 512, 256), "tiny": ("tiny", 16, 16)}  # backbone size, px, miniSD-size px
SWITCHES = ("channels_last", "low_memory", "compile")
FULL_IMAGE_SHARE = 0.25  # a per-image row decodes a whole image only within this share of the budget left


@dataclass
class Row:
    """One measurement; ``key`` names it in the records."""

    kind: str
    extractor: str = "resnet50"
    dtype: str = "fp32"
    batch: int = 1
    switches: tuple[str, ...] = ()
    preset: str | None = None

    @property
    def key(self) -> str:
        parts = [self.kind, self.preset or self.extractor, self.dtype, f"b{self.batch}", *self.switches]
        return "/".join(p for p in parts if p)


def plan() -> list[Row]:
    """Every row, cheapest first within each part, so a short budget still covers each part."""
    rows = [
        Row("guided", name, dtype, batch)
        for batch in (1, 4)
        for dtype in ("fp32", "bf16", "fp16")
        for name in ("resnet50", "clip-rn50", "vit-h14")
    ]
    rows += [Row("guided", "resnet50", "bf16", 1, (switch,)) for switch in SWITCHES]
    rows += [Row("guided", "resnet50", "fp32", 1, ("low_memory",))]
    rows += [Row("endtoend"), Row("featinv-train", batch=8), Row("featinv-reconstruct")]
    rows += [Row("per-image", preset=name) for name in (DEFAULT_PRESET, "reference")]
    return rows


class Check:
    """Runs the rows of ``plan`` on one device and scale, each with the same functions users call."""

    def __init__(self, scale: str, device: torch.device, budget_s: float, iterations: int) -> None:
        self.scale, self.device, self.iterations = scale, device, iterations
        self.deadline = time.monotonic() + budget_s
        self.backbone: Backbone | None = None
        self.extractors: dict[str, Extractor] = {}
        self.per_iteration: dict[tuple[str, str], float] = {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def fresh_backbone(self, resolution: int | None = None) -> Backbone:
        size, px, _ = SCALE[self.scale]
        with torch.device(self.device):  # initialised in place on the GPU: seconds, not minutes
            return random_sd(size, resolution or px).to(self.device)

    def backbone_(self) -> Backbone:
        if self.backbone is None:
            self.backbone = self.fresh_backbone()
        return self.backbone

    def extractor(self, name: str) -> Extractor:
        if name not in self.extractors:
            spec = EXTRACTORS[self.scale][name]
            self.extractors[name] = load_extractor(spec, device=self.device, pretrained=False)
        return self.extractors[name]

    def run(self, row: Row) -> dict:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        tic = time.perf_counter()
        result = getattr(self, row.kind.replace("-", "_"))(row)
        return {**result, "row_seconds": round(time.perf_counter() - tic, 2)}

    # -- the rows ------------------------------------------------------------------------------------
    def guided(self, row: Row) -> dict:
        dtype = DTYPES[row.dtype]
        if "compile" in row.switches and self.scale == "tiny":
            return {"skipped": "--compile is not run in --tiny: inductor's C++ build takes minutes on a CPU"}
        if not row.switches:
            backbone, extractor = self.backbone_(), self.extractor(row.extractor)
        else:  # switches change the models in place: a fresh copy of each
            self.backbone = None
            backbone = self.fresh_backbone()
            spec = EXTRACTORS[self.scale][row.extractor]
            extractor = load_extractor(spec, device=self.device, pretrained=False)
            apply_speed(backbone, extractor, SpeedOptions(**{s: True for s in row.switches}))
        warmup = 3 if "compile" in row.switches else 1
        timing = time_guided(
            backbone, extractor, batch=row.batch, dtype=dtype, iterations=self.iterations, warmup=warmup
        )
        if not row.switches:
            self.per_iteration[(row.extractor, row.dtype)] = timing["seconds_per_iteration_median"]
        return timing

    def endtoend(self, row: Row) -> dict:
        backbone, net = self.backbone_(), self.extractor(row.extractor)
        config = EndToEndConfig(iterations=1)  # published: 20 DDIM steps, CFG 3, 16 cutouts, checkpointing
        images = torch.rand(row.batch, 3, *backbone.image_size, device=self.device)
        x_t = torch.randn(row.batch, *backbone.latent_shape, device=self.device)
        null = backbone.encode_prompt([""]).unsqueeze(0).repeat(config.num_steps, 1, 1, 1)
        tic = time.perf_counter()
        counterfactual(backbone, net, images, 0, 1, seeds=[0], prompts="a photo", inverted=(x_t, null), config=config,
                       start_from="reconstruction")  # fmt: skip (the optimisation's cost, not the word-swap search)
        self.sync()
        return {
            "seconds_iteration_0_and_1": round(time.perf_counter() - tic, 3),
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "setting": {"num_steps": config.num_steps, "guidance_scale": config.guidance_scale, "cutouts": 16},
        }

    def featinv_backbone(self) -> Backbone:
        self.backbone = None  # the miniSD-size backbone replaces the 512 px one
        return self.fresh_backbone(SCALE[self.scale][2])

    def featinv_train(self, row: Row) -> dict:
        backbone = self.featinv_backbone()
        extractor = load_extractor(FEATINV_LAYER[self.scale], device=self.device, pretrained=False)
        model = featinv.build(backbone, extractor).to(self.device)
        config = featinv.TrainConfig(steps=3, batch_size=row.batch, sample_every=0, checkpoint_every=1000)
        with tempfile.TemporaryDirectory() as out:
            featinv.train(model, out, world=row.batch, config=config, backbone=backbone, extractor=extractor,
                          device=str(self.device), quiet=True)  # fmt: skip
            times = [json.loads(line)["time"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]
        self.featinv_model = model
        return {
            "seconds_per_step": round(times[-1] - times[-2], 3),
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
            "resolution": backbone.image_size[0],
        }

    def featinv_reconstruct(self, row: Row) -> dict:
        model = getattr(self, "featinv_model", None)
        if model is None:
            return {"skipped": "needs the featinv-train row's model"}
        backbone = self.featinv_backbone()
        features = torch.randn(row.batch, *model.config.feature_shape, device=self.device)
        settings = featinv.SampleSettings()
        tic = time.perf_counter()
        featinv.reconstruct(model, features, backbone=backbone, settings=settings)
        self.sync()
        return {
            "seconds_per_image": round((time.perf_counter() - tic) / row.batch, 3),
            "ddim_steps": settings.num_steps,
            "peak_memory_mb": round(peak_memory_mb(self.device), 1),
        }

    def per_image(self, row: Row) -> dict:
        config = preset(row.preset)
        iterations = config.total_iterations()
        measured = self.per_iteration.get((row.extractor, row.dtype))
        if measured is None:
            return {"skipped": f"needs the guided row {row.extractor}/{row.dtype}/b1"}
        estimate = measured * iterations
        if estimate < FULL_IMAGE_SHARE * self.left():
            backbone, net = self.backbone_(), self.extractor(row.extractor)
            with torch.no_grad():
                target = net(torch.rand(1, 3, *backbone.image_size, device=self.device))
            tic = time.perf_counter()
            decode_features(backbone, net, target, config, seeds=[0], dtype=DTYPES[row.dtype], quiet=True)
            self.sync()
            return {"seconds_per_image": round(time.perf_counter() - tic, 2), "iterations": iterations}
        return {
            "seconds_per_image": round(estimate, 1),
            "iterations": iterations,
            "extrapolated": f"{iterations} iterations x {measured} s (guided row, batch 1): a full image would "
            f"take more than {FULL_IMAGE_SHARE:.0%} of the {self.left():.0f} s left of the budget",
        }

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU (CI)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all rows (default: 8 minutes)")
    parser.add_argument("--iterations", type=int, default=3, help="timed guided iterations per row")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "records" / "gpu-check")
    args = parser.parse_args()
    device = resolve_device("cpu" if args.tiny and args.device == "auto" else args.device)
    check = Check("tiny" if args.tiny else "full", device, args.budget, args.iterations)
    name = device_name(device)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{re.sub(r'[^A-Za-z0-9]+', '-', name).strip('-').lower()}-{time.strftime('%Y%m%d-%H%M')}.jsonl"
    common = {"device": name, "scale": check.scale, "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d")}
    with path.open("w") as records:
        for row in plan():
            record = {"row": row.key, **asdict(row), **common}
            if check.left() <= 0:
                record["skipped"] = f"budget: the {args.budget:.0f} s were spent before this row"
            else:
                try:
                    record.update(check.run(row))
                except Exception as error:  # out of memory, no compiler for --compile: recorded, not fatal
                    record["skipped"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            records.write(json.dumps(record) + "\n")
            records.flush()
            print(json.dumps(record), flush=True)
    print(f"records: {path}")


if __name__ == "__main__":
    main()
