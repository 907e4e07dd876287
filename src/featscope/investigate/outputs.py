"""What every investigation item writes: its iterates and figures, its loss record, its ``config.yaml`` record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from featscope.images import load_image, save_image
from featscope.investigate.common import save_loss_plot, save_strip
from featscope.runs import RunFolder
from featscope.settings import Settings
from featscope.sheet import save_sheet

if TYPE_CHECKING:
    from featscope.backbones.base import Backbone
    from featscope.investigate.cores import Optimized


def save_iterates(run: RunFolder, result: Optimized, captions: list[list[str]], title: str) -> int:
    """initial.png, best.png, final.png, strip.png, loss.png, sheet.png (with the target.png already written, if
    any) and one log.jsonl line per iteration (its loss terms) of sample 0; returns its best iteration."""
    best = result.best_iteration(0)
    images = result.images[:, 0]
    curves = result.loss_curves(0)
    for i in range(len(images)):
        run.log({"iteration": i, "losses": {name: values[i] for name, values in curves.items()}})
    save_image(images[0], run.file("initial.png"))
    save_image(result.best[0], run.file("best.png"))
    save_image(images[-1], run.file("final.png"))
    save_strip(images, captions, run.file("strip.png"), best=best)
    save_loss_plot(curves, run.file("loss.png"), title)
    columns, row = ["initial", "best", "final"], [images[0], result.best[0], images[-1]]
    if run.file("target.png").is_file():
        columns, row = ["target", *columns], [load_image(run.file("target.png"))[0], *row]
    note = f"best: iteration {best}, " + ", ".join(captions[best]) if best < len(captions) else ""
    save_sheet(run.file("sheet.png"), columns, [row], notes=[note])
    return best


def loss_record(result: Optimized) -> dict:
    """The loss curves of sample 0 (non-augmented, per term), its augmented losses and whether it stopped early."""
    return {
        "losses": result.loss_curves(0),
        "augmented_losses": result.augmented_losses(0),
        "stopped_early": bool(result.solver.stopped_early),
    }


def run_record(backbone: Backbone, device: torch.device, *settings: Settings | None, **keys: Any) -> dict:
    """An investigation's ``config.yaml`` record: its own ``keys`` (networks, labels, seed), the backbone, the
    device and, under ``settings``, every knob of the method's options and of its solver, as used."""
    used = {name: value for s in settings if s is not None for name, value in s.to_dict().items()}
    return {**keys, "backbone": backbone.spec, "device": str(device), "settings": used}
