"""Speed switches change how the networks run, not what the solver computes."""

from __future__ import annotations

import pytest
import torch

import featscope
from featscope.backbones import load_backbone
from featscope.speed import SpeedOptions

EXTRACTOR = "tiny_nets:tiny_cnn"
FAST = {"num_steps": 4, "recurrence": 2, "guidance_weight": 4.0}


@pytest.mark.parametrize("switch", ["channels_last", "low_memory"])
def test_switch_gives_the_same_decoded_image(switch, tiny_sd_folder, target_png, tmp_path):
    spec = f"sd:{tiny_sd_folder}"
    plain = featscope.decode(target_png, backbone=spec, extractor=EXTRACTOR, quiet=True, **FAST)
    backbone = load_backbone(spec)
    fast = featscope.decode(
        target_png, backbone=backbone, extractor=EXTRACTOR, speed=SpeedOptions(**{switch: True}),
        out=tmp_path / "run", quiet=True, **FAST,
    )  # fmt: skip
    if switch == "low_memory":
        assert backbone.unet.is_gradient_checkpointing and backbone.vae.is_gradient_checkpointing
    else:
        weight = backbone.unet.conv_in.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    torch.testing.assert_close(fast.best, plain.best, atol=2e-4, rtol=0)
    assert (tmp_path / "run" / "config.yaml").read_text().count(switch) == 1
