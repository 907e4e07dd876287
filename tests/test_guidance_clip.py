"""Forward guidance with a gradient clip: what one guided iteration adds to eps stays within mean +- thr * std of
the rescaled gradient, sample by sample, however heavy the gradient's tails (the universal solver's update)."""

from __future__ import annotations

import pytest
import torch

from featscope.devices import generators_for
from featscope.objectives import feature_match
from featscope.solvers.configs import UniversalConfig
from featscope.solvers.universal import _GuidedSampling, rescale_to
from test_universal import tiny_extractor, tiny_pixel_backbone

CPU = torch.device("cpu")
WEIGHT = 2.0


def guided_step(grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(what forward guidance adds to eps, divided by the guidance weight; the rescaled gradient) for a loss
    whose gradient, 4 z^3, has heavy tails."""
    extractor = tiny_extractor()
    objective = feature_match(extractor, extractor(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))))
    config = UniversalConfig(num_steps=2, guidance_weight=WEIGHT, grad_clip=grad_clip)
    sampling = _GuidedSampling(tiny_pixel_backbone(), objective, config, generators_for([0, 1], CPU), torch.float32)
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    eps = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    eps_guided, _, skipped = sampling.forward_guidance(z, eps, (z**4).flatten(1).sum(1))
    assert skipped == 0
    return (eps_guided - eps) / WEIGHT, rescale_to(4 * z.detach() ** 3, eps)


@pytest.mark.parametrize("threshold", [0.5, 1.0, 3.0])
def test_forward_guidance_stays_within_the_clip_of_the_rescaled_gradient(threshold):
    added, rescaled = guided_step(threshold)
    flat = rescaled.flatten(1)
    low = (flat.mean(1) - threshold * flat.std(1))[:, None]
    high = (flat.mean(1) + threshold * flat.std(1))[:, None]
    assert (flat > high + 1e-3).any() and (flat < low - 1e-3).any()  # the clip has something to cut
    added = added.flatten(1)
    assert (added >= low - 1e-5).all() and (added <= high + 1e-5).all()
    torch.testing.assert_close(added, torch.maximum(torch.minimum(flat, high), low))


def test_without_a_clip_forward_guidance_adds_the_whole_rescaled_gradient():
    added, rescaled = guided_step(0.0)
    torch.testing.assert_close(added, rescaled)
