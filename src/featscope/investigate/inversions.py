"""Null-text inversion of real images (DiG-IN §4), run: per image x_T, the per-step null texts and the
reconstruction error, the starting point of every counterfactual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from featscope.datasets import ImageItem
from featscope.images import save_image
from featscope.investigate import cores
from featscope.investigate.captions import Captions
from featscope.investigate.common import load_start_image
from featscope.investigate.fidelity import is_world, reconstruction, reconstruction_threshold, say_poor
from featscope.investigate.inputs import image_list, load_backbone, needs_prompts
from featscope.investigate.launch import Build, Call, investigation
from featscope.investigate.outputs import run_record
from featscope.investigate.settings import InvertSettings
from featscope.orchestration import Item, Plan, summary_row, unique_ids
from featscope.runs import RunFolder, atomic_torch_save
from featscope.sheet import save_sheet

if TYPE_CHECKING:  # the backbones import diffusers (seconds): only when a run starts
    from featscope.backbones.base import Backbone


@investigation(InvertSettings, solver=None, seeded=False)
def invert(call: Call, images) -> Build:
    """Null-text inversion of real images (DiG-IN §4): per item ``x_T.pt``, ``null_texts.pt`` (num_steps, 1, L, D),
    ``target.png``, ``reconstruction.png``, ``prompt.txt`` and the reconstruction error (also of plain DDIM
    inversion) in ``metrics.json``. ``images`` as in :func:`featscope.investigate.counterfactual`; ``settings`` is
    an :class:`InvertSettings` (the captions, ``num_steps``, ``guidance_scale``, ``inner_steps``). The prompt is
    ``prompt``, else a ``<image>.txt`` caption, else the ``caption_model``'s caption, else the template with the
    class name (dataset folders; loose files without a prompt get the empty caption)."""
    entries = image_list(images)

    def build(torch_device: torch.device) -> Plan:
        model = load_backbone(call.backbone, torch_device)
        needs_prompts(model, "null-text inversion needs")
        run = _Invert(model, call.options, Captions.load(call.options, model, torch_device), call.quiet)
        ids = unique_ids([e.item_id for e in entries])
        items = [Item(i, e) for i, e in zip(ids, entries, strict=True)]
        record = run_record(model, torch_device, run.captions.used(call.options))
        return Plan("invert", items, run.work, record, invert_row)

    return build


@dataclass
class _Invert:
    """An inversion run's backbone, settings and captions: the work of one item."""

    model: Backbone
    options: InvertSettings
    captions: Captions
    quiet: bool

    def work(self, run: RunFolder, item: Item) -> dict:
        entry: ImageItem = item.payload
        o = self.options
        text = self.captions.of_entry(entry)
        image = load_start_image(entry.path, tuple(self.model.image_size))
        save_image(image[0], run.file("target.png"))
        result = cores.invert(self.model, image, text, num_steps=o.num_steps, guidance_scale=o.guidance_scale,
                              inner_steps=o.inner_steps, quiet=self.quiet)  # fmt: skip
        atomic_torch_save(result.x_t.cpu(), run.file("x_T.pt"))
        atomic_torch_save(result.null_texts.cpu(), run.file("null_texts.pt"))
        (run.file("prompt.txt")).write_text(text + "\n", encoding="utf-8")
        save_image(result.reconstruction[0], run.file("reconstruction.png"))
        errors = f"L2 {result.distance[0]['l2']:.4f} (plain DDIM inversion: {result.ddim_distance[0]['l2']:.4f})"
        save_sheet(
            run.file("sheet.png"),
            ["target", "null-text inversion", "DDIM inversion"],
            [[image[0], result.reconstruction[0], result.ddim_reconstruction[0]]],
            notes=[errors],
        )
        spec = self.model.spec
        recon = reconstruction(image, result.reconstruction, reconstruction_threshold(spec), is_world(spec))
        say_poor(item.item_id, recon)
        return {
            "image": str(entry.path),
            "class": entry.class_name or None,
            "prompt": text,
            "num_steps": o.num_steps,
            "guidance_scale": o.guidance_scale,
            "latent_mse": result.latent_mse[0],
            **result.distance[0],
            "ddim_only": {"latent_mse": result.ddim_latent_mse[0], **result.ddim_distance[0]},
            "reconstruction": recon,
        }


invert_row = summary_row("latent MSE = latent_mse; L2 = l2; L2 plain DDIM = ddim_only.l2")
