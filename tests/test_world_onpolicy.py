"""On-policy training of the world diffusion model: the sampler's own states, labelled by the pool's Bayes x0."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.training_utils import EMAModel

from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError
from featscope.images import to_tensor
from featscope.world.onpolicy import ROLLOUT_STEPS, SamplerStates
from featscope.world.posterior import PoolPosterior
from featscope.world.render import generate
from featscope.world.train import export_ddpm, train_ddpm

SMALL = {"batch_size": 2, "pool_size": 8, "quiet": True, "checkpoint_every": 1, "prediction_type": "v_prediction"}


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=False)["unet"]


def test_sampler_states_are_the_states_the_models_own_ddim_sampler_visits():
    backbone = load_backbone("world:ddpm")
    unet, text = backbone.unet, backbone.prompt_encoder.encoder
    images, records = generate(64, 0)
    posterior = PoolPosterior(to_tensor(images) * 2 - 1, records)
    states = SamplerStates(unet, text, backbone.scheduler_config, posterior, high_from=900, chains=3)
    states.refresh(EMAModel(list(unet.parameters()) + list(text.parameters())), torch.Generator().manual_seed(5))

    # the library's DDIM sampler from the same noise, written out step by step
    scheduler = backbone.make_scheduler("ddim", ROLLOUT_STEPS)
    z = torch.randn((3, *backbone.latent_shape), generator=torch.Generator().manual_seed(5))
    cond = backbone.encode_prompt([""] * 3)
    grid = [int(t) for t in scheduler.timesteps if int(t) >= 900]
    visited = []
    with torch.no_grad():
        for t in grid:
            visited.append(z)
            z = scheduler.step(backbone.eps(z, t, cond), t, z).prev_sample
    n_grid = 3 * len(grid)
    torch.testing.assert_close(states.x_t[:n_grid], torch.cat(visited), atol=1e-5, rtol=1e-5)
    assert states.t[:n_grid].tolist() == [t for t in grid for _ in range(3)]
    # one state inside each grid interval, never below the band
    between = states.t[n_grid:].view(len(grid), 3)
    for k, t in enumerate(grid):
        assert (between[k] <= t).all() and (between[k] > t - 1000 // ROLLOUT_STEPS).all() and (between[k] >= 900).all()
    # labels are the pool's Bayes x0 of each state; the model's own estimates differ from them
    expected = posterior.x0(states.x_t, backbone.alphas_cumprod[states.t], [{}] * len(states.t))
    torch.testing.assert_close(states.x0, expected)
    assert sorted(states.model_gap) == sorted(grid) and all(v > 1e-4 for v in states.model_gap.values())
    x_t, t, x0 = states.draw(5, torch.Generator().manual_seed(0))
    assert x_t.shape == (5, 3, 32, 32) and (t >= 900).all() and x0.shape == x_t.shape


def test_on_policy_training_resumes_exactly_and_is_recorded(tmp_path):
    options = {"on_policy_share": 0.5, "on_policy_refresh": 1, "high_noise_from": 960, **SMALL}
    whole = train_ddpm(tmp_path / "whole", 3, **options)
    train_ddpm(tmp_path / "split", 2, **options)
    split = train_ddpm(tmp_path / "split", 3, **options)
    a, b = _weights(whole), _weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = _weights(train_ddpm(tmp_path / "plain", 3, **{**options, "on_policy_share": 0.0}))
    assert any(not torch.equal(a[k], plain[k]) for k in a)  # the on-policy rows changed the update
    log = [json.loads(line) for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]
    assert all(r["on_policy_share"] == 0.5 and set(r["on_policy_gap"]) == {"999", "979"} for r in log)
    state = torch.load(whole, weights_only=False)
    assert state["on_policy_share"] == 0.5 and state["on_policy_refresh"] == 1
    assert json.loads((export_ddpm(whole, tmp_path / "export") / "training.json").read_text())["on_policy_share"] == 0.5


def test_on_policy_options_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(FeatscopeError, match="on-policy share 1.5 is not a share"):
        train_ddpm(tmp_path / "share", 1, on_policy_share=1.5, **SMALL)
    with pytest.raises(FeatscopeError, match="on-policy refresh 0"):
        train_ddpm(tmp_path / "refresh", 1, on_policy_share=0.5, on_policy_refresh=0, **SMALL)
    assert not (tmp_path / "share").exists() and not (tmp_path / "refresh").exists()
