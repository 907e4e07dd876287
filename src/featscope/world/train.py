"""Training of the embedded world's models, reproducible from a seed and resumable from a checkpoint."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from torch import nn

from featscope.errors import FeatscopeError
from featscope.images import to_tensor
from featscope.progress import tqdm
from featscope.runs import atomic_torch_save, make_folder
from featscope.world.classifier_tasks import TASKS
from featscope.world.kinds import scene_kind
from featscope.world.models import (
    CLASSIFIER_TASKS,
    NUM_TRAIN_TIMESTEPS,
    PREDICTION_TYPES,
    UNET_CHANNELS,
    WorldClassifier,
    build_world_scheduler,
    build_world_unet,
    check_unet_channels,
    labels_of,
)
from featscope.world.patterns import ATTRIBUTES
from featscope.world.render import WorldRecord, caption_of, generate
from featscope.world.text import WorldTextEncoder, tokenize

CAPTION_DROPOUT = 0.15
WORD_KEEP = 0.8
HIGH_NOISE_FROM = NUM_TRAIN_TIMESTEPS // 2  # the noisier half, where layout and size are decided


def _dropped_attributes(records: list, rng: np.random.Generator, dropout: float = CAPTION_DROPOUT) -> list[dict]:
    """The attributes each training caption names: none with probability ``dropout``, else each kept
    with probability WORD_KEEP."""
    kept = []
    for record in records:
        if rng.random() < dropout:
            kept.append({})
            continue
        kept.append({k: v for k, v in record.attributes().items() if rng.random() < WORD_KEEP})
    return kept


def train_ddpm(
    out: str | Path,
    steps: int,
    *,
    batch_size: int = 32,
    lr: float = 1e-3,
    pool_size: int = 30000,
    seed: int = 0,
    checkpoint_every: int = 250,
    threads: int | None = None,
    quiet: bool = False,
    prediction_type: str = "epsilon",
    init_from: str | Path | None = None,
    caption_dropout: float = CAPTION_DROPOUT,
    high_noise_share: float = 0.0,
    high_noise_from: int = HIGH_NOISE_FROM,
    anneal_from: int | None = None,
    channels: tuple[int, ...] | None = None,
) -> Path:
    """Train (or resume training of) the world diffusion model up to ``steps`` optimiser steps.

    The checkpoint ``out/checkpoint.pt`` holds model, EMA, optimiser and step; calling again with a
    larger ``steps`` continues where it stopped. ``init_from`` starts a new run (fresh optimiser and
    EMA) from another checkpoint's EMA weights, e.g. to fine-tune an epsilon model into a
    ``v_prediction`` one. ``lr`` and ``caption_dropout`` (the share of empty captions, which trains
    unconditional sampling) apply to the steps this call runs. ``high_noise_share`` of each batch
    draws its timestep from t >= ``high_noise_from`` (default 500, the noisier half, where layout and
    size are decided) instead of all timesteps. ``anneal_from`` decays the rate along a half cosine
    from ``lr`` at that step to 0 at ``steps`` (absolute step numbers, so a resumed call follows the
    same schedule). ``channels`` are the UNet's block widths (default: the shipped model's
    32, 64, 96); a resumed run keeps its own.
    Returns the checkpoint path.
    """
    _check_ddpm_options(steps, prediction_type, caption_dropout, high_noise_share, high_noise_from, anneal_from)
    if channels is not None:
        channels = check_unet_channels(channels)
    out = Path(out)
    make_folder(out)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ckpt = out / "checkpoint.pt"
    run = _DdpmRun.open(ckpt, lr, prediction_type, init_from, channels)
    scheduler = build_world_scheduler(prediction_type)
    images, records = generate(pool_size, seed)
    pool = to_tensor(images) * 2 - 1
    schedule = {
        "caption_dropout": caption_dropout,
        "high_noise_share": high_noise_share,
        "high_noise_from": high_noise_from,
    }
    settings = {
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "prediction_type": prediction_type,
        "init_from": run.init_from,
        **schedule,
        "anneal_from": anneal_from,
        "channels": list(run.channels),
    }
    log = (out / "log.jsonl").open("a" if run.start else "w")
    bar = tqdm(range(run.start, steps), initial=run.start, total=steps, disable=quiet, desc="train world:ddpm")
    tic = time.time()
    for step in bar:
        rng = np.random.default_rng([seed, step])
        xt, t, ids, target = _ddpm_batch(
            pool, records, scheduler, rng, batch_size, caption_dropout, high_noise_share, high_noise_from
        )
        lr_now = _learning_rate(lr, step, steps, anneal_from)
        loss = run.step(xt, t, ids, target, lr_now)
        bar.set_postfix(loss=f"{loss:.4f}")
        log.write(
            json.dumps({"step": step + 1, "loss": loss, "lr": lr_now, **schedule, "time": time.time() - tic}) + "\n"
        )
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            log.flush()
            run.save(ckpt, step + 1, settings)
    log.close()
    return ckpt


def _check_ddpm_options(
    steps: int,
    prediction_type: str,
    caption_dropout: float,
    high_noise_share: float,
    high_noise_from: int,
    anneal_from: int | None,
) -> None:
    """Refuse training options that name no share, timestep, step or prediction type, before anything is written."""
    for name, share in (("caption dropout", caption_dropout), ("high-noise share", high_noise_share)):
        if not 0 <= share <= 1:
            raise FeatscopeError(f"{name} {share} is not a share; pass a value in [0, 1]")
    if not 0 <= high_noise_from < NUM_TRAIN_TIMESTEPS:
        raise FeatscopeError(
            f"high-noise start {high_noise_from} is not a timestep; pass one in 0..{NUM_TRAIN_TIMESTEPS - 1}"
        )
    if anneal_from is not None and not 0 <= anneal_from < steps:
        raise FeatscopeError(f"anneal start {anneal_from} is not before the last step {steps}; pass a smaller one")
    if prediction_type not in PREDICTION_TYPES:
        raise FeatscopeError(f"unknown prediction type {prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}")


def _ddpm_batch(
    pool: torch.Tensor,
    records: list[WorldRecord],
    scheduler: DDPMScheduler,
    rng: np.random.Generator,
    batch_size: int,
    caption_dropout: float,
    high_noise_share: float,
    high_noise_from: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch drawn with a step's ``rng``: noisy images, timesteps, caption tokens and the UNet's target."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    idx = torch.from_numpy(rng.choice(len(pool), batch_size, replace=False))
    x0 = pool[idx]
    kept = _dropped_attributes([records[i] for i in idx.tolist()], rng, caption_dropout)
    t = _training_timesteps(batch_size, scheduler.config.num_train_timesteps, high_noise_share, gen, high_noise_from)
    noise = torch.randn(x0.shape, generator=gen)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    ids = tokenize([caption_of(k) for k in kept])
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    return xt, t, ids, target


@dataclass
class _DdpmRun:
    """The trained state of one world ddpm run: UNet, text encoder, optimiser, EMA, and where it stands."""

    unet: nn.Module
    text: WorldTextEncoder
    optimizer: torch.optim.Optimizer
    ema: EMAModel
    channels: tuple[int, ...]
    start: int = 0
    init_from: str | None = None

    @property
    def params(self) -> list[nn.Parameter]:
        return list(self.unet.parameters()) + list(self.text.parameters())

    @classmethod
    def open(
        cls,
        ckpt: Path,
        lr: float,
        prediction_type: str,
        init_from: str | Path | None,
        channels: tuple[int, ...] | None,
    ) -> _DdpmRun:
        """Resume the run checkpointed at ``ckpt``, or start one (from ``init_from``'s EMA weights when given)."""
        state = _read_checkpoint(ckpt) if ckpt.exists() else None
        if state is not None:
            _check_resumable(ckpt, state, prediction_type, init_from, channels)
            channels = _channels_of(state)
        channels = channels or UNET_CHANNELS
        unet, text = build_world_unet(channels), WorldTextEncoder()
        if state is None and init_from is not None:
            _load_ema_weights(init_from, unet, text)  # before the EMA, whose average starts from these weights
        params = list(unet.parameters()) + list(text.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        ema = EMAModel(params, decay=0.9995, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
        run = cls(unet, text, optimizer, ema, channels, init_from=None if init_from is None else str(init_from))
        if state is not None:
            unet.load_state_dict(state["unet"])
            text.load_state_dict(state["text"])
            optimizer.load_state_dict(state["optimizer"])
            ema.load_state_dict(state["ema"])
            run.start, run.init_from = state["step"], state.get("init_from")
        return run

    def step(self, xt: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, target: torch.Tensor, lr: float) -> float:
        """One optimiser step at rate ``lr`` on the MSE of the UNet's output to ``target``; returns the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = F.mse_loss(self.unet(xt, t, self.text(ids)).sample, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = self.params
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.optimizer.step()
        self.ema.step(params)
        return loss.item()

    def save(self, ckpt: Path, step: int, settings: dict) -> None:
        """Write the run's state after ``step`` steps, with the ``settings`` it was trained with."""
        states = {"unet": self.unet, "text": self.text, "optimizer": self.optimizer, "ema": self.ema}
        atomic_torch_save({**{k: v.state_dict() for k, v in states.items()}, "step": step, **settings}, ckpt)


def _check_resumable(
    ckpt: Path, state: dict, prediction_type: str, init_from: str | Path | None, channels: tuple[int, ...] | None
) -> None:
    """Refuse to resume a checkpointed run with another UNet width, prediction type or starting point."""
    trained_channels = _channels_of(state)
    if channels is not None and channels != trained_channels:
        raise FeatscopeError(
            f"{ckpt} trains a UNet with channels {_joined(trained_channels)}, not {_joined(channels)}; "
            "drop --channels to resume it, or pick a new --out folder"
        )
    trained = state.get("prediction_type", "epsilon")
    if trained != prediction_type:
        raise FeatscopeError(
            f"{ckpt} trains a {trained} model, not {prediction_type}; "
            "pass the same --prediction, or start a new --out folder with --init-from"
        )
    if init_from is not None and str(init_from) != state.get("init_from"):
        raise FeatscopeError(
            f"{ckpt} already holds a run, so --init-from {init_from} would be ignored; "
            "drop --init-from to resume it, or pick a new --out folder"
        )


def _training_timesteps(
    batch: int, num_train: int, high_noise_share: float, gen: torch.Generator, high_from: int = HIGH_NOISE_FROM
) -> torch.Tensor:
    """Uniform timesteps, except that a ``high_noise_share`` of the batch is drawn from [high_from, num_train)."""
    t = torch.randint(0, num_train, (batch,), generator=gen)
    high = round(batch * high_noise_share)
    if high:
        t[:high] = torch.randint(high_from, num_train, (high,), generator=gen)
    return t


def _learning_rate(lr: float, step: int, steps: int, anneal_from: int | None) -> float:
    """200 steps of linear warm-up, then ``lr``; from ``anneal_from`` a half cosine down to 0 at ``steps``."""
    if anneal_from is not None and step >= anneal_from:
        return lr * 0.5 * (1 + math.cos(math.pi * (step - anneal_from) / (steps - anneal_from)))
    return lr * min(1.0, (step + 1) / 200)


def _channels_of(state: dict) -> tuple[int, ...]:
    """A training checkpoint's UNet widths (checkpoints from before the option: the shipped ones)."""
    return tuple(state.get("channels", UNET_CHANNELS))


def _joined(channels: tuple[int, ...]) -> str:
    return ",".join(map(str, channels))


def _read_checkpoint(checkpoint: str | Path) -> dict:
    if not Path(checkpoint).is_file():
        raise FeatscopeError(f"no training checkpoint at {checkpoint}; pass the checkpoint.pt of a world ddpm run")
    return torch.load(checkpoint, weights_only=False, map_location="cpu")


def _load_ema_weights(checkpoint: str | Path, unet: nn.Module, text: nn.Module, state: dict | None = None) -> dict:
    """Put a training checkpoint's EMA weights (``state``, read from ``checkpoint`` when not given) into
    ``unet`` and ``text``; returns the checkpoint."""
    state = _read_checkpoint(checkpoint) if state is None else state
    widths = tuple(unet.config.block_out_channels)
    if _channels_of(state) != widths:
        raise FeatscopeError(
            f"{checkpoint} holds a UNet with channels {_joined(_channels_of(state))}, not {_joined(widths)}; "
            "pass the same --channels as that run"
        )
    unet.load_state_dict(state["unet"])
    text.load_state_dict(state["text"])
    copy_ema(state["ema"], unet, text)
    return state


def copy_ema(ema_state: dict, *modules: nn.Module) -> None:
    """Put a training checkpoint's EMA weights (diffusers' ``EMAModel`` state over ``modules``' parameters, in
    order) into the modules."""
    params = [p for module in modules for p in module.parameters()]
    ema = EMAModel(params)
    ema.load_state_dict(ema_state)
    ema.copy_to(params)


def export_ddpm(checkpoint: str | Path, folder: str | Path) -> Path:
    """Write the EMA weights of a training checkpoint as a diffusers-style pipeline folder."""
    state = _read_checkpoint(checkpoint)
    unet, text = build_world_unet(_channels_of(state)), WorldTextEncoder()
    _load_ema_weights(checkpoint, unet, text, state)
    prediction_type = state.get("prediction_type", "epsilon")
    folder = Path(folder)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    build_world_scheduler(prediction_type).save_pretrained(folder / "scheduler")
    text.save(folder / "text_encoder")
    keys = (
        "step",
        "seed",
        "batch_size",
        "lr",
        "prediction_type",
        "init_from",
        "caption_dropout",
        "high_noise_share",
        "high_noise_from",
        "anneal_from",
        "channels",
    )
    (folder / "training.json").write_text(json.dumps({k: state.get(k) for k in keys if state.get(k) is not None}))
    return folder


def classifier_records(task: str, n: int, rng: np.random.Generator) -> list[WorldRecord]:
    """``n`` records of the classifier's training distribution (``world.classifier_tasks``)."""
    return [TASKS[task].draw(rng) for _ in range(n)]


def _labelled(task: str, records: list[WorldRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    attribute, spec = CLASSIFIER_TASKS[task], TASKS[task]
    label = spec.label or (lambda record: getattr(record, attribute))
    labels = torch.tensor([ATTRIBUTES[attribute].index(label(r)) for r in records])
    draw = scene_kind(spec.kind).render
    return to_tensor(np.stack([draw(r) for r in records])), labels


def evaluate_classifier(
    model: nn.Module, task: str, n: int = 2000, seed: int = 10_000, records: list[WorldRecord] | None = None
) -> dict[str, float]:
    """Accuracy on fresh images of the task's training distribution (or on ``records``), ``accuracy_clean``, and
    on the same images changed by each of the task's probes (``accuracy_color_swapped``, ...): a network that
    relies on what a probe changes drops there."""
    rng = np.random.default_rng(seed)
    records = classifier_records(task, n, rng) if records is None else records
    sets = {"accuracy_clean": records}
    for name, probe in TASKS[task].probes.items():
        sets[f"accuracy_{name}"] = [probe(r, rng) for r in records]
    result = {}
    with torch.no_grad():
        for name, chosen in sets.items():
            images, labels = _labelled(task, chosen)
            result[name] = (model(images).argmax(1) == labels).float().mean().item()
    return result


def train_classifier(
    task: str,
    out: str | Path,
    steps: int | None = None,
    *,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    quiet: bool = False,
) -> dict:
    """Train one world classifier and save it (safetensors with labels and accuracies as metadata).

    Shortcut tasks (``spurious-net``) train briefly at a constant rate: they learn the easy
    cue (95% predictive) and stop before they learn shape, which is how shortcut networks arise.
    """
    spec = TASKS[task]
    steps = steps or spec.steps
    torch.manual_seed(seed)
    model = WorldClassifier(len(labels_of(task)), image_size=scene_kind(spec.kind).image_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    if spec.shortcut:
        sched = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=steps)
    else:
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng([seed, 7])
    tic = time.time()
    for _ in tqdm(range(steps), disable=quiet, desc=f"train world:{task}"):
        x, y = _labelled(task, classifier_records(task, batch_size, rng))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step()
    model.eval()
    metrics = {
        **evaluate_classifier(model, task),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "train_seconds": round(time.time() - tic, 1),
    }
    model.save(out, {"task": task, "labels": list(labels_of(task)), "metrics": metrics})
    return metrics
