"""Training the world diffusion model: resumable, reproducible, and fine-tunable into v-prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError
from featscope.world.render import generate
from featscope.world.train import (
    _dropped_attributes,
    _learning_rate,
    _training_timesteps,
    export_ddpm,
    train_ddpm,
)

SMALL = {"batch_size": 2, "pool_size": 8, "quiet": True, "checkpoint_every": 1}
NARROW = {**SMALL, "channels": (16, 32, 48)}  # a narrower UNet: the same training loop, a quarter of the work


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=False)["unet"]


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    whole = train_ddpm(tmp_path / "whole", 3, **NARROW)
    train_ddpm(tmp_path / "split", 2, **NARROW)
    split = train_ddpm(tmp_path / "split", 3, **NARROW)
    a, b = _weights(whole), _weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = _weights(train_ddpm(tmp_path / "once", 1, **NARROW))
    assert any(not torch.equal(first[k], a[k]) for k in a)  # the steps did change the weights


def test_v_prediction_fine_tune_exports_a_model_that_samples_from_pure_noise(tmp_path):
    base = train_ddpm(tmp_path / "eps", 1, **SMALL)
    with pytest.raises(FeatscopeError, match="--init-from"):
        train_ddpm(tmp_path / "eps", 2, prediction_type="v_prediction", **SMALL)
    with pytest.raises(FeatscopeError, match="no training checkpoint"):
        train_ddpm(tmp_path / "bad", 1, prediction_type="v_prediction", init_from=tmp_path / "missing.pt", **SMALL)
    tuned = train_ddpm(tmp_path / "v", 1, prediction_type="v_prediction", init_from=base, **SMALL)
    state = torch.load(tuned, weights_only=False)
    assert state["prediction_type"] == "v_prediction" and state["init_from"] == str(base)
    backbone = load_backbone(f"pixel:{export_ddpm(tuned, tmp_path / 'export')}")
    assert backbone.prediction_type == "v_prediction"
    scheduler = backbone.make_scheduler("ddim", 10)
    assert int(scheduler.timesteps[0]) == 999  # trailing spacing starts at pure noise
    with pytest.raises(FeatscopeError, match="drop --init-from"):
        train_ddpm(tmp_path / "v", 2, prediction_type="v_prediction", init_from=tmp_path / "other.pt", **SMALL)
    eps_backbone = load_backbone(f"pixel:{export_ddpm(base, tmp_path / 'export-eps')}")
    assert int(eps_backbone.make_scheduler("ddim", 10).timesteps[0]) == 900


def test_caption_dropout_sets_the_share_of_empty_captions():
    _, records = generate(400, 0)
    for dropout in (0.0, 0.4, 1.0):
        kept = _dropped_attributes(records, np.random.default_rng(0), dropout)
        empty = sum(k == {} for k in kept) / len(kept)
        assert abs(empty - dropout) < 0.06, (dropout, empty)
    with pytest.raises(FeatscopeError, match="not a share"):
        train_ddpm("unused", 1, caption_dropout=1.5, **SMALL)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_target_and_noise_prediction_invert_each_other(prediction_type):
    backbone = load_backbone("world:ddpm")
    backbone.scheduler_config["prediction_type"] = prediction_type
    gen = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([0, 250, 600, 900])
    a = backbone.alphas_cumprod[t].view(-1, 1, 1, 1)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
    perfect = backbone.training_target(z0, noise, t)  # what a perfect UNet outputs
    eps = backbone.eps_from_output(perfect, z_t, t)
    torch.testing.assert_close(eps, noise, rtol=1e-4, atol=1e-4)
    x0 = torch.stack([backbone.x0_from_eps(z_t[i : i + 1], int(t[i]), eps[i : i + 1])[0] for i in range(4)])
    torch.testing.assert_close(x0, z0, rtol=1e-3, atol=1e-3)
    if prediction_type == "v_prediction":  # v = sqrt(abar) eps - sqrt(1 - abar) x0, the diffusers definition
        scheduler = backbone.make_scheduler("ddpm", 10)
        torch.testing.assert_close(perfect, scheduler.get_velocity(z0, noise, t))


def test_high_noise_share_moves_that_share_of_timesteps_to_the_noisier_half():
    gen = torch.Generator().manual_seed(0)
    for share in (0.0, 0.5, 1.0):
        t = torch.cat([_training_timesteps(32, 1000, share, gen) for _ in range(200)])
        assert t.min() >= 0 and t.max() < 1000
        noisy = (t >= 500).float().mean().item()
        assert abs(noisy - (share + (1 - share) / 2)) < 0.02, (share, noisy)
    t = torch.cat([_training_timesteps(32, 1000, 0.5, gen, high_from=800) for _ in range(200)])
    assert abs((t >= 800).float().mean().item() - (0.5 + 0.5 * 0.2)) < 0.02 and t.max() < 1000
    with pytest.raises(FeatscopeError, match="high-noise share"):
        train_ddpm("unused", 1, high_noise_share=-0.1, **SMALL)
    with pytest.raises(FeatscopeError, match="high-noise start"):
        train_ddpm("unused", 1, high_noise_from=1000, **SMALL)


def test_annealed_learning_rate_falls_from_lr_to_zero_and_resumes_on_the_same_schedule(tmp_path):
    assert _learning_rate(1e-3, 0, 10, None) == pytest.approx(5e-6)  # warm-up
    assert _learning_rate(1e-3, 500, 1000, None) == 1e-3
    rates = [_learning_rate(1e-3, s, 1000, 600) for s in range(590, 1000)]
    assert rates[:11] == [1e-3] * 10 + [pytest.approx(1e-3)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False)) and rates[-1] < 1e-7
    assert _learning_rate(1e-3, 800, 1000, 600) == pytest.approx(5e-4)  # half way down the half cosine
    with pytest.raises(FeatscopeError, match="anneal start"):
        train_ddpm("unused", 3, anneal_from=3, **SMALL)
    options = {"anneal_from": 1, "high_noise_share": 0.5, **SMALL}
    whole = _weights(train_ddpm(tmp_path / "whole", 3, **options))
    train_ddpm(tmp_path / "split", 2, **options)
    split = _weights(train_ddpm(tmp_path / "split", 3, **options))
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    plain = _weights(train_ddpm(tmp_path / "plain", 3, **SMALL))
    assert any(not torch.equal(whole[k], plain[k]) for k in whole)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([_learning_rate(1e-3, s, 3, 1) for s in range(3)])


def test_unet_channels_are_kept_across_resume_export_and_fine_tune(tmp_path):
    wide = train_ddpm(tmp_path / "wide", 1, channels=(16, 32, 48), **SMALL)
    train_ddpm(tmp_path / "wide", 2, **SMALL)  # resuming without --channels keeps the run's widths
    state = torch.load(wide, weights_only=False)
    assert state["step"] == 2 and state["channels"] == [16, 32, 48]
    backbone = load_backbone(f"pixel:{export_ddpm(wide, tmp_path / 'export')}")
    assert tuple(backbone.unet.config.block_out_channels) == (16, 32, 48)
    assert json.loads((tmp_path / "export" / "training.json").read_text())["channels"] == [16, 32, 48]
    with pytest.raises(FeatscopeError, match="drop --channels"):
        train_ddpm(tmp_path / "wide", 3, channels=(32, 64, 96), **SMALL)
    with pytest.raises(FeatscopeError, match="pass the same --channels"):
        train_ddpm(tmp_path / "tuned", 1, init_from=wide, **SMALL)
    with pytest.raises(FeatscopeError, match="multiples of 16"):
        train_ddpm(tmp_path / "odd", 1, channels=(16, 30, 48), **SMALL)
    assert not (tmp_path / "tuned" / "checkpoint.pt").exists() and not (tmp_path / "odd").exists()
