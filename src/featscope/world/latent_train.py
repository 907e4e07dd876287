"""Training of the latent world's Stable Diffusion pipeline (``world.latent``) on patterned 64 px scenes.

Two stages, each resumable from its ``checkpoint.pt`` like the world ddpm: ``train_vae`` fits the
autoencoder (L1 reconstruction plus a small KL term, as SD's first stage without its perceptual and GAN
terms) and sets its ``scaling_factor`` to 1 / the latents' standard deviation; ``train_unet`` then trains the
UNet and the CLIP text encoder together (no pretrained text encoder exists for the world's words) on the
frozen VAE's latents, with SD's epsilon objective and noise schedule, caption dropout for classifier-free
guidance and partial captions. ``export_pipeline`` writes the EMA weights as the diffusers folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.training_utils import EMAModel
from torch import nn

from featscope.images import to_tensor
from featscope.progress import tqdm
from featscope.runs import atomic_torch_save, make_folder
from featscope.world.kinds import KINDS
from featscope.world.latent import (
    MAX_TOKENS,
    SD_SCHEDULER,
    SHIPPED,
    LatentSizes,
    assemble,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    save_pipeline,
)
from featscope.world.patterns import PatternRecord, caption_of
from featscope.world.train import _dropped_attributes, _learning_rate, copy_ema

POOL_SIZE = 30_000  # patterns64 images of seed 0: the training pool
DEFAULT_STEPS = {"latent-vae": 1_500, "latent-unet": 3_000}  # the shipped model's recipe (training/latent-world)
CAPTION_DROPOUT = 0.1
KL_WEIGHT = 1e-6  # SD's first stage uses 1e-6
OBJECT_WEIGHT = 10.0  # L1 weight of pixels away from the background colour (the object, its pattern, the tag)
WARMUP = 200  # steps of linear warm-up (a fifth of a shorter run); a half cosine then takes the rate to 0 at the end
SCALE_IMAGES = 512  # pool images whose latents set the VAE's scaling factor


def scene_pool(n: int, seed: int) -> tuple[np.ndarray, list[PatternRecord]]:
    """``n`` patterned scenes as (n, 64, 64, 3) uint8 (368 MB for the 30,000 of the pool), and their records."""
    return KINDS["patterns64"].generate(n, seed)


def _inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 scenes as the VAE's input: (B, 3, 64, 64) floats in [-1, 1]."""
    return to_tensor(images) * 2 - 1


def _rate(lr: float, step: int, steps: int) -> float:
    """Both stages' learning rate: linear warm-up, then a half cosine to 0 at ``steps`` (``WARMUP``)."""
    return _learning_rate(lr, step, steps, anneal_from=min(WARMUP, steps // 5))


def object_weights(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel L1 weights of images in [-1, 1]: OBJECT_WEIGHT where a pixel differs from the background colour
    (the median of the border) by more than 0.05, else 1; normalised to mean 1 per batch. Objects cover a few
    percent of a scene: unweighted, the VAE learnt the background and left objects grey and blurred."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], 2)
    background = border.median(2).values[:, :, None, None]
    weights = 1 + (OBJECT_WEIGHT - 1) * ((x - background).abs().amax(1, keepdim=True) > 0.05).float()
    return weights / weights.mean()


def _open(
    ckpt: Path, modules: dict[str, nn.Module], lr: float, ema: bool
) -> tuple[torch.optim.Optimizer, EMAModel | None, int]:
    """An AdamW optimiser (and EMA) over ``modules``; resumed with the modules from ``ckpt`` when it exists."""
    params = [p for m in modules.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    average = EMAModel(params, decay=0.9995, use_ema_warmup=True, inv_gamma=1.0, power=0.75) if ema else None
    if not ckpt.exists():
        return optimizer, average, 0
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    for name, module in modules.items():
        module.load_state_dict(state[name])
    optimizer.load_state_dict(state["optimizer"])
    if average is not None:
        average.load_state_dict(state["ema"])
    return optimizer, average, state["step"]


def _save(
    ckpt: Path, modules: dict[str, nn.Module], optimizer, ema: EMAModel | None, step: int, settings: dict
) -> None:
    state = {name: m.state_dict() for name, m in modules.items()}
    state |= {"optimizer": optimizer.state_dict(), "step": step, **settings}
    if ema is not None:
        state["ema"] = ema.state_dict()
    atomic_torch_save(state, ckpt)


def train_vae(
    out: str | Path,
    steps: int,
    *,
    sizes: LatentSizes = SHIPPED,
    batch_size: int = 16,
    lr: float = 1e-3,
    pool_size: int = POOL_SIZE,
    seed: int = 0,
    kl_weight: float = KL_WEIGHT,
    checkpoint_every: int = 250,
    quiet: bool = False,
) -> Path:
    """Train (or resume) the VAE up to ``steps`` steps; writes ``out/checkpoint.pt``, ``out/log.jsonl`` and, with
    its scaling factor, the diffusers ``out/vae`` folder. Returns that folder."""
    out = Path(out)
    make_folder(out)
    torch.manual_seed(seed)
    vae = build_vae(sizes)
    ckpt = out / "checkpoint.pt"
    optimizer, _, start = _open(ckpt, {"vae": vae}, lr, ema=False)
    pool, _ = scene_pool(pool_size, seed)
    settings = {"seed": seed, "batch_size": batch_size, "lr": lr, "kl_weight": kl_weight, "sizes": asdict(sizes)}
    with (out / "log.jsonl").open("a" if start else "w") as log:
        tic = time.time()
        for step in tqdm(range(start, steps), initial=start, total=steps, disable=quiet, desc="train latent vae"):
            rng = np.random.default_rng([seed, step])
            x = _inputs(pool[rng.choice(len(pool), batch_size, replace=False)])
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(torch.Generator().manual_seed(int(rng.integers(2**31))))
            rec = ((vae.decode(z).sample - x).abs() * object_weights(x)).mean()
            kl = posterior.kl().mean() / x[0].numel()
            loss = rec + kl_weight * kl
            for group in optimizer.param_groups:
                group["lr"] = _rate(lr, step, steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            entry = {
                "step": step + 1,
                "loss": loss.item(),
                "l1": rec.item(),
                "kl": kl.item(),
                "time": time.time() - tic,
            }
            log.write(json.dumps(entry) + "\n")
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                log.flush()
                _save(ckpt, {"vae": vae}, optimizer, None, step + 1, settings)
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(_inputs(pool[:SCALE_IMAGES])).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    vae.save_pretrained(out / "vae", safe_serialization=True)
    return out / "vae"


def encode_pool(vae: AutoencoderKL, pool: np.ndarray, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen VAE's posterior means and standard deviations of every pool image, scaled as SD scales latents."""
    means, stds = [], []
    with torch.no_grad():
        for start in range(0, len(pool), chunk):
            posterior = vae.encode(_inputs(pool[start : start + chunk])).latent_dist
            means.append(posterior.mean)
            stds.append(posterior.std)
    scale = vae.config.scaling_factor
    return torch.cat(means) * scale, torch.cat(stds) * scale


def train_unet(
    out: str | Path,
    steps: int,
    vae: str | Path,
    *,
    sizes: LatentSizes = SHIPPED,
    batch_size: int = 32,
    lr: float = 5e-4,
    pool_size: int = POOL_SIZE,
    seed: int = 0,
    caption_dropout: float = CAPTION_DROPOUT,
    checkpoint_every: int = 250,
    quiet: bool = False,
) -> Path:
    """Train (or resume) the UNet and text encoder up to ``steps`` steps on the latents of the VAE folder ``vae``;
    writes ``out/checkpoint.pt`` and ``out/log.jsonl``. Returns the checkpoint."""
    out = Path(out)
    make_folder(out)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    modules = {"unet": build_unet(sizes), "text_encoder": build_text_encoder(tokenizer, sizes)}
    ckpt = out / "checkpoint.pt"
    optimizer, ema, start = _open(ckpt, modules, lr, ema=True)
    frozen = AutoencoderKL.from_pretrained(vae).eval().requires_grad_(False)
    pool, records = scene_pool(pool_size, seed)
    means, stds = encode_pool(frozen, pool)
    scheduler = DDPMScheduler(
        **{k: v for k, v in SD_SCHEDULER.items() if k not in ("skip_prk_steps", "set_alpha_to_one")}
    )
    params = [p for m in modules.values() for p in m.parameters()]
    settings = {"seed": seed, "batch_size": batch_size, "lr": lr, "caption_dropout": caption_dropout}
    settings["vae"] = str(Path(vae).resolve())  # export_pipeline reads the VAE from here
    settings["sizes"] = asdict(sizes)
    with (out / "log.jsonl").open("a" if start else "w") as log:
        tic = time.time()
        for step in tqdm(range(start, steps), initial=start, total=steps, disable=quiet, desc="train latent unet"):
            rng = np.random.default_rng([seed, step])
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            idx = torch.from_numpy(rng.choice(len(pool), batch_size, replace=False))
            z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)
            kept = _dropped_attributes([records[i] for i in idx.tolist()], rng, caption_dropout)
            ids = tokenizer(
                [caption_of(k) for k in kept], padding="max_length", max_length=MAX_TOKENS, return_tensors="pt"
            )
            t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
            noise = torch.randn(z.shape, generator=gen)
            text = modules["text_encoder"](ids.input_ids).last_hidden_state
            loss = F.mse_loss(modules["unet"](scheduler.add_noise(z, noise, t), t, text).sample, noise)
            for group in optimizer.param_groups:
                group["lr"] = _rate(lr, step, steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            ema.step(params)
            log.write(json.dumps({"step": step + 1, "loss": loss.item(), "time": time.time() - tic}) + "\n")
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                log.flush()
                _save(ckpt, modules, optimizer, ema, step + 1, settings)
    return ckpt


def export_pipeline(checkpoint: str | Path, folder: str | Path) -> Path:
    """Write a ``train_unet`` checkpoint's EMA weights, with its VAE, as the diffusers pipeline folder."""
    state = torch.load(checkpoint, weights_only=False, map_location="cpu")
    sizes = LatentSizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["sizes"].items()})
    tokenizer = build_tokenizer()
    unet, text = build_unet(sizes), build_text_encoder(tokenizer, sizes)
    unet.load_state_dict(state["unet"])
    text.load_state_dict(state["text_encoder"])
    copy_ema(state["ema"], unet, text)
    vae = AutoencoderKL.from_pretrained(state["vae"])
    return save_pipeline(assemble(vae, unet, tokenizer, text), folder)
