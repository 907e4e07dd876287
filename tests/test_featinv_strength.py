"""FeatInv's control strength (conditioning scale) on a backbone other than SDXL: at 0 the ControlNet plays no
part (the UNet alone; a reconstruction does not depend on the feature map), at 1 it steers."""

from __future__ import annotations

from dataclasses import replace

import torch

from featscope import featinv
from featscope.backbones import load_backbone
from featscope.featinv.sampling import controlled_output
from featscope.featinv.world import embedded_folder
from featscope.world.render import generate


def test_strength_zero_is_the_unet_without_control_and_strength_one_steers_it():
    model = featinv.load_model(embedded_folder())  # trained: its residuals move the prediction
    backbone = load_backbone(model.config.backbone, device="cpu")
    assert backbone.spec == "world:ddpm"
    images = torch.from_numpy(generate(2, seed=12)[0]).permute(0, 3, 1, 2).float() / 255
    features = featinv.encode(model, images)
    z = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 500)
    text = backbone.encode_prompt([model.config.prompt] * 2)
    with torch.no_grad():
        plain = backbone.unet(z, t, **backbone.unet_kwargs(text)).sample
        off = controlled_output(model, backbone, z, t, text, features, 0.0)
        on = controlled_output(model, backbone, z, t, text, features, 1.0)
    torch.testing.assert_close(off, plain, atol=1e-6, rtol=0)
    assert not torch.allclose(on, plain, atol=1e-3)

    settings = featinv.SampleSettings(num_steps=2, conditioning_scale=0.0)
    free = featinv.reconstruct(model, features, backbone=backbone, settings=settings, seeds=[3, 3]).images
    steered = featinv.reconstruct(
        model, features, backbone=backbone, settings=replace(settings, conditioning_scale=1.0), seeds=[3, 3]
    ).images
    assert torch.allclose(free[0], free[1], atol=1e-4)  # one seed, two maps: the maps play no part
    assert not torch.allclose(steered[0], steered[1], atol=1e-2)
    assert not torch.allclose(steered[0], free[0], atol=1e-2)
