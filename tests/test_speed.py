"""Speed switches change how the networks run, not what the solver computes."""

from __future__ import annotations

import pytest
import torch

import featscope
from featscope.backbones import load_backbone
from featscope.speed import SpeedOptions, apply_speed

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


def _guided_gradient(backbone, z: torch.Tensor) -> torch.Tensor:
    """The gradient one guided iteration takes: d |decode(x0(z))|^2 / dz through UNet and VAE."""
    z = z.clone().requires_grad_()
    cond = backbone.encode_prompt(["red cat"] * len(z))
    images = backbone.decode(backbone.x0_from_eps(z, 500, backbone.eps(z, 500, cond)))
    (grad,) = torch.autograd.grad(images.square().sum(), z)
    return grad


def test_low_memory_recomputes_the_vae_layers_and_keeps_the_gradient(tiny_sd_folder):
    plain, low = load_backbone(f"sd:{tiny_sd_folder}"), load_backbone(f"sd:{tiny_sd_folder}")
    apply_speed(low, None, SpeedOptions(low_memory=True))
    calls = {"plain": 0, "low": 0}
    for name, backbone in (("plain", plain), ("low", low)):
        conv = backbone.vae.decoder.up_blocks[-1].resnets[-1].conv1  # inside a checkpointed resnet
        conv.register_forward_pre_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_guided_gradient(low, z), _guided_gradient(plain, z), atol=1e-5, rtol=0)
    assert calls["plain"] == 1 and calls["low"] >= 2  # run again in the backward pass: its activations were not kept
    assert set(low.state_dict()) == set(plain.state_dict())
    before = calls["low"]
    with torch.no_grad():
        low.decode(z)
    assert calls["low"] == before + 1  # no recomputation without gradients
