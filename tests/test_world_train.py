"""Training the world diffusion model: resumable, reproducible, and fine-tunable into v-prediction."""

from __future__ import annotations

import pytest
import torch

from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError
from featscope.world.train import export_ddpm, train_ddpm

SMALL = {"batch_size": 2, "pool_size": 8, "quiet": True, "checkpoint_every": 1}


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=False)["unet"]


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    whole = train_ddpm(tmp_path / "whole", 3, **SMALL)
    train_ddpm(tmp_path / "split", 2, **SMALL)
    split = train_ddpm(tmp_path / "split", 3, **SMALL)
    a, b = _weights(whole), _weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = _weights(train_ddpm(tmp_path / "once", 1, **SMALL))
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
    eps_backbone = load_backbone(f"pixel:{export_ddpm(base, tmp_path / 'export-eps')}")
    assert int(eps_backbone.make_scheduler("ddim", 10).timesteps[0]) == 900
