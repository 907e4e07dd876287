"""Training a FeatInv ControlNet with accelerate: frozen UNet, eps-prediction loss, joint feature+prompt dropout.

Every random draw of a step (images, dropout, flips, timesteps, noise) is a function of (seed, step,
micro-batch, process), so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from featscope._version import __version__
from featscope.backbones import Backbone
from featscope.devices import generators_for
from featscope.errors import FeatscopeError
from featscope.extractors import Extractor, load_extractor
from featscope.featinv.config import TrainConfig
from featscope.featinv.data import (
    FolderImages,
    ImageSource,
    MicroBatch,
    draw,
    feature_cache,
    flipped,
    square,
)
from featscope.featinv.model import (
    FeatInvConfig,
    FeatInvModel,
    backbone_of,
    check_backbone,
    check_extractor,
    load_model,
)
from featscope.featinv.sampling import controlled_output, sample
from featscope.featinv.world_images import WorldImages
from featscope.images import image_grid, save_image
from featscope.progress import tqdm
from featscope.runs import atomic_torch_save, atomic_write_text, make_folder

if TYPE_CHECKING:
    from accelerate import Accelerator

CHECKPOINT = "checkpoint.pt"


class Trainer:
    """One training run's state: the models, the data, and how one micro-batch's loss is computed."""

    def __init__(
        self, model: FeatInvModel, backbone: Backbone, extractor: Extractor, source: ImageSource, config: TrainConfig
    ) -> None:
        self.backbone, self.extractor, self.source, self.config = backbone, extractor, source, config
        self.cache: torch.Tensor | None = None
        texts = backbone.encode_prompt([model.config.prompt, ""]).float()
        self.prompt, self.empty = texts[:1], texts[1:]

    def batch(self, plan: MicroBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at the backbone's size and their feature maps: the same crop (random or centre), flipped
        together when features are live; the network sees it at its input size, the backbone at its own."""
        if plan.crop_seeds is None:
            images = self.source.load(plan.indices).to(device)
        else:
            images = self.source.crops(plan.indices, plan.crop_seeds).to(device)
        if self.cache is not None:
            features = self.cache[plan.indices].to(device)
        else:
            images = flipped(images, plan.hflip, plan.vflip)
            with torch.no_grad():
                features = self.extractor.target_features(images).float()
        return square(images, self.backbone.image_size[0]), features

    def loss(self, model: torch.nn.Module, plan: MicroBatch, device: torch.device) -> torch.Tensor:
        """The noise-prediction MSE of one micro-batch (v-prediction backbones: the v target)."""
        backbone = self.backbone
        images, features = self.batch(plan, device)
        with torch.no_grad():
            z0 = backbone.encode(images).float()
        n = z0.shape[0]
        t = torch.randint(0, backbone.num_train_timesteps, (n,), generator=plan.generator).to(device)
        noise = torch.randn(z0.shape, generator=plan.generator).to(device)
        a = backbone.alphas_cumprod[t].view(-1, 1, 1, 1).float()
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        drop = plan.drop.to(device)
        features = features * (~drop).view(-1, *[1] * (features.dim() - 1))
        text = torch.where(drop.view(-1, 1, 1), self.empty, self.prompt)
        target = backbone.training_target(z0, noise, t)
        output = controlled_output(model, backbone, z_t, t, text, features)
        return F.mse_loss(output.float(), target)

    def samples(self, model: FeatInvModel, device: torch.device) -> np.ndarray:
        """A grid: the first training images (top) and their reconstructions (bottom), seeds 0..k-1."""
        k = min(self.config.sample_images, len(self.source))
        plan = MicroBatch(list(range(k)), *[torch.zeros(k, dtype=torch.bool)] * 3, torch.Generator())
        images, features = self.batch(plan, device)
        recon = sample(
            model, self.backbone, features, generators_for(list(range(k)), device), num_steps=self.config.sample_steps
        )
        return image_grid(torch.cat([images, recon]).cpu(), columns=k, scale=max(1, 128 // images.shape[-1]))


def with_epochs(config: TrainConfig, images: int, processes: int) -> TrainConfig:
    """``config`` with ``steps`` covering ``epochs`` passes over ``images`` (all processes together), when set."""
    if config.epochs is None:
        return config
    per_step = config.batch_size * config.grad_accum * processes
    return replace(config, steps=max(1, math.ceil(config.epochs * images / per_step)))


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a run resumes from)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        atomic_write_text(path, "".join(line + "\n" for line in lines))


def _resume(out: Path, model: FeatInvModel) -> dict | None:
    path = out / CHECKPOINT
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    theirs = state["model"]
    if model.config.identity() != FeatInvConfig(**theirs).identity():
        raise FeatscopeError(
            f"{path} is a checkpoint of a model for {theirs['extractor']} features {tuple(theirs['feature_shape'])} "
            f"(adapter width {theirs['adapter_width']}), not of this one ({model.config.describe()}, width "
            f"{model.config.adapter_width}); choose another --out or pass --overwrite"
        )
    model.load_state_dict(state["controlnet"])
    return state


def _clear(out: Path) -> None:
    """Remove what an earlier run left in ``out`` (starting afresh)."""
    for name in (CHECKPOINT, "log.jsonl", "config.yaml"):
        (out / name).unlink(missing_ok=True)
    for name in ("samples", "model"):
        shutil.rmtree(out / name, ignore_errors=True)


def _optimizer(model: FeatInvModel, config: TrainConfig, state: dict | None) -> torch.optim.Optimizer:
    """AdamW over the ControlNet, with a resumed run's state (at the configured learning rate)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr
    return optimizer


def _start_folder(out: Path, start: int, record: dict) -> None:
    """Create ``out``, drop log lines past the resumed step and write config.yaml (the main process only)."""
    make_folder(out)
    _truncate_log(out / "log.jsonl", start)
    atomic_write_text(out / "config.yaml", yaml.safe_dump({**record, "featscope": __version__}, sort_keys=False))


def _step(
    accelerator: Accelerator, prepared: torch.nn.Module, optimizer: torch.optim.Optimizer, trainer: Trainer, step: int
) -> float:
    """One optimiser step of ``grad_accum`` micro-batches; their mean loss, averaged over the processes."""
    config = trainer.config
    losses = []
    for micro in range(config.grad_accum):
        plan = draw(
            config.seed,
            step,
            micro,
            accelerator.process_index,
            len(trainer.source),
            config.batch_size,
            config.drop_prob,
            config.flip and trainer.cache is None,
            config.crop == "random" and trainer.cache is None,
        )
        with accelerator.accumulate(prepared), accelerator.autocast():
            loss = trainer.loss(prepared, plan, accelerator.device)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return accelerator.reduce(torch.stack(losses).mean(), "mean").item()


def _save_checkpoint(
    path: Path, model: FeatInvModel, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig
) -> None:
    """checkpoint.pt: the ControlNet's and the optimiser's state after ``step`` steps, with the configs."""
    payload = {
        "controlnet": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "model": asdict(model.config),
        "train": asdict(config),
    }
    atomic_torch_save(payload, path)


def train(
    model: FeatInvModel | str | Path,
    out: str | Path,
    *,
    images: str | Path | None = None,
    world: int | None = None,
    world_seed: int = 0,
    config: TrainConfig | None = None,
    backbone: Backbone | None = None,
    extractor: Extractor | None = None,
    device: str = "auto",
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Train (or resume) a FeatInv model on an image folder or on ``world`` generated world images.

    Writes into ``out``: checkpoint.pt (every ``checkpoint_every`` steps and at the end), log.jsonl,
    config.yaml, samples/step_*.png, features.safetensors (with ``cache_features``) and model/ (the final
    model). A folder holding checkpoint.pt is resumed unless ``overwrite``. Returns the path of model/.
    Run under ``accelerate launch`` for several GPUs.
    """
    try:  # an optional dependency (featscope[all]): importing featscope.featinv must not need it
        from accelerate import Accelerator
    except ImportError as error:
        raise FeatscopeError("FeatInv training needs accelerate: pip install 'featscope[all]'") from error
    config = config or TrainConfig()
    config.validate()
    if (images is None) == (world is None):
        raise FeatscopeError(
            "give the training images: a folder (--images DIR) or a number of world images (--world N)"
        )
    model = load_model(model) if isinstance(model, (str, Path)) else model
    out = Path(out)
    if overwrite:
        _clear(out)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum, cpu=device == "cpu"
    )
    where = accelerator.device
    backbone = backbone or backbone_of(model.config, device=where)
    extractor = extractor or load_extractor(
        model.config.extractor, weights=model.config.extractor_weights, device=where
    )
    check_backbone(model, backbone)
    check_extractor(model, extractor)
    size = model.config.image_size
    source = FolderImages(images, size) if images is not None else WorldImages(world, world_seed, size)
    config = with_epochs(config, len(source), accelerator.num_processes)
    state = _resume(out, model)
    start = state["step"] if state else 0
    trainer = Trainer(model, backbone, extractor, source, config)
    if config.cache_features:
        with accelerator.main_process_first():
            trainer.cache = feature_cache(out / "features.safetensors", source, extractor, config.feature_batch, quiet)
    optimizer = _optimizer(model, config, state)
    model.train()
    prepared, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process
    if main:
        data = {"images": str(images)} if images is not None else {"world": world, "world_seed": world_seed}
        _start_folder(out, start, {"model": asdict(model.config), "train": asdict(config), "data": data})
    log = (out / "log.jsonl").open("a") if main else None
    tic = time.time()
    bar = tqdm(
        range(start, config.steps), initial=start, total=config.steps, disable=quiet or not main, desc="featinv train"
    )
    for step in bar:
        mean = _step(accelerator, prepared, optimizer, trainer, step)
        done = step + 1
        if main:
            bar.set_postfix(loss=f"{mean:.4f}")
            log.write(json.dumps({"step": done, "loss": mean, "lr": config.lr, "time": time.time() - tic}) + "\n")
            log.flush()
        unwrapped = accelerator.unwrap_model(prepared)
        if main and config.sample_every and done % config.sample_every == 0:
            grid = trainer.samples(unwrapped, where)
            save_image(grid, out / "samples" / f"step_{done:07d}.png")
        if main and (done % config.checkpoint_every == 0 or done == config.steps):
            _save_checkpoint(out / CHECKPOINT, unwrapped, optimizer, done, config)
        accelerator.wait_for_everyone()
    if log is not None:
        log.close()
    final = accelerator.unwrap_model(prepared)
    final.config.trained_steps = max(start, config.steps)
    if main:
        final.save(out / "model")
    accelerator.wait_for_everyone()
    return out / "model"
