"""The universal solver's design-space pieces: step schedule, DPM-Solver++, x0 guidance (MPGD), adaptive stopping."""

from __future__ import annotations

import math

import pytest
import torch

from featscope.devices import generators_for
from featscope.errors import FeatscopeError
from featscope.objectives import feature_match
from featscope.solvers.configs import PRESETS, UniversalConfig
from featscope.solvers.pieces import Patience, dpmpp_step, unit_rms, warped_timesteps, x0_guidance
from featscope.solvers.universal import solve_universal
from test_universal import CPU, _solve, tiny_extractor, tiny_pixel_backbone


def test_warped_schedule_matches_hand_computation():
    assert warped_timesteps(999, 4, 1.0) == [999, 749, 500, 250]
    assert warped_timesteps(999, 4, 2.0) == [999, 562, 250, 62]  # 999 * (3/4)^2 = 561.9, ...
    assert warped_timesteps(2, 3, 1.0) == [2, 1, 0]  # round(2/3) = 1 would repeat: one below the step before


def test_dpmpp_order_one_is_the_ddim_step_of_diffusers():
    scheduler = tiny_pixel_backbone().make_scheduler("ddim", 10)
    t, t_next = int(scheduler.timesteps[3]), int(scheduler.timesteps[4])
    abar = scheduler.alphas_cumprod
    z, eps = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    x0 = (z - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
    expected = scheduler.step(eps, t, z).prev_sample
    torch.testing.assert_close(dpmpp_step(z, x0, abar[t], abar[t_next]), expected, atol=1e-5, rtol=1e-5)


def test_dpmpp_order_two_matches_hand_computation():
    z, x0, x0_prev = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a_prev, a_t, a_s = torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.8)
    # log-SNRs -log 2, 0, log 2: h = h_prev, r = 1, D = 1.5 x0 - 0.5 x0_prev
    expected = math.sqrt(0.4) * z + (math.sqrt(0.8) - math.sqrt(0.2)) * (1.5 * x0 - 0.5 * x0_prev)
    torch.testing.assert_close(dpmpp_step(z, x0, a_t, a_s, (x0_prev, a_prev)), expected)
    # the last step (to abar 1) is first order: the clean estimate itself
    torch.testing.assert_close(dpmpp_step(z, x0, a_t, torch.tensor(1.0), (x0_prev, a_prev)), x0)


def test_x0_guidance_matches_hand_computation():
    centre, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    seen = []
    delta = x0_guidance(
        x0, lambda x: ((x - centre) ** 2).flatten(1).sum(1), 2, 0.1, on_evaluation=lambda x, d: seen.append(d)
    )
    x = x0.clone()
    for _ in range(2):  # gradient 2 (x - c), normalised to unit RMS per sample
        g = 2 * (x - centre)
        x = x - 0.1 * g / g.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(delta, x - x0)
    assert len(seen) == 2 and seen[0].shape == (2,)
    assert torch.equal(unit_rms(torch.zeros(1, 3)), torch.zeros(1, 3))


def test_patience_stops_each_sample_after_steps_without_a_one_percent_drop():
    patience = Patience(2, steps=2)
    for best in ([10.0, 10.0], [9.95, 5.0], [9.0, 4.0], [9.0, 3.0], [8.99, 2.0]):
        patience.update(torch.tensor(best))
    # sample 0: 9.95 is no 1% drop (waits 1), 9.0 is (0), then 9.0 and 8.99 are not (2): stopped
    assert patience.active.tolist() == [False, True]
    off = Patience(1, steps=0)
    off.update(torch.tensor([1.0]))
    off.update(torch.tensor([1.0]))
    assert off.active.all()


def test_x0_guidance_is_counted_without_unet_backward_passes():
    config = UniversalConfig(
        num_steps=4, recurrence=1, early_recurrence=1, guidance_weight=0.0, x0_weight=0.1, x0_steps=3, x0_from=2
    )
    out, _, _ = _solve(config, seeds=(0,))
    # steps 0-1: one pass each; steps 2-3: one, three inner steps, one tracking the result
    assert out.evaluations == config.network_evaluations() == 2 * 1 + 2 * 5
    assert out.unet_equivalents == config.unet_equivalents() == 4
    forward = UniversalConfig(num_steps=4, recurrence=2, early_recurrence=2, guidance_weight=0.1)
    assert forward.unet_equivalents() == 8 * 3  # forward + backward (2 forwards) per iteration


@pytest.mark.parametrize(
    "family",
    [
        dict(sampler="dpmpp", guidance_weight=4.0),  # DPM-Solver++(2M) with forward guidance
        dict(sampler="ddim", schedule_power=1.5, guidance_weight=4.0),  # warped schedule
        dict(guidance_weight=0.0, x0_weight=0.3, x0_steps=3, x0_from=10),  # MPGD: x0 guidance only
    ],
)
def test_guided_distance_is_far_below_unguided(family):
    config = UniversalConfig(num_steps=20, recurrence=2, **family)
    _, guided, target = _solve(config)
    _, unguided, _ = _solve(config.with_overrides(guidance_weight=0.0, x0_weight=0.0), target=target)
    assert (guided <= 0.5 * unguided).all(), (guided, unguided)


def test_adaptive_stopping_saves_evaluations_and_keeps_each_sample_its_own():
    config = UniversalConfig(num_steps=30, recurrence=1, early_recurrence=1, guidance_weight=0.5, patience=2)
    out, distance, target = _solve(config, seeds=(3, 4))
    assert out.evaluations < config.network_evaluations()
    assert torch.equal(out.final, out.best)  # a stopped sample's result is its best image
    single, _, _ = _solve(config, seeds=(4,), target=target[1:])  # sample 1 alone stops where it stopped in the batch
    torch.testing.assert_close(single.best[0], out.best[1], atol=1e-4, rtol=1e-4)
    full, full_distance, _ = _solve(config.with_overrides(patience=0), seeds=(3, 4), target=target)
    assert full.evaluations == config.network_evaluations()


def test_bad_piece_settings_are_user_errors():
    for bad in (
        dict(sampler="ddpm", schedule_power=2.0),
        dict(schedule_power=0.0),
        dict(x0_steps=0),
        dict(x0_from=50),
        dict(patience=-1),
        dict(patience=3, candidates=2, select_after=5),
    ):
        with pytest.raises(FeatscopeError):
            UniversalConfig(**bad).validate()


def test_fast_preset_is_the_warped_ddim_chain_with_sparse_backward_steps_within_one_percent_of_reference():
    fast, reference = PRESETS["fast"], PRESETS["reference"]
    assert (fast.sampler, fast.num_steps, fast.recurrence, fast.guidance_weight) == ("ddim", 50, 2, 0.1)
    assert fast.schedule_power == 1.5
    assert [fast.recurrence_at(i) for i in (0, 48, 49)] == [2, 2, 1]
    assert [fast.backward_at(i) for i in (48, 49)] == [0, 159] and fast.backward_sparsity == 1.0
    assert [fast.tracked_at(i) for i in (48, 49)] == [False, True]
    # 49 steps x K 2 scored before the update, then the last step: 1 + 1 tracked + 159 backward
    assert fast.network_evaluations() == 98 + 1 + 1 + 159 == 259 == reference.network_evaluations() // 100
    assert fast.unet_equivalents() == 99 * 3
    assert PRESETS["refine"].schedule_power == 1.0  # refine keeps the chain it was chosen with


def test_the_solver_samples_on_the_warped_schedule():
    config = UniversalConfig(num_steps=5, recurrence=1, early_recurrence=1, guidance_weight=0.5, schedule_power=2.0)
    first = int(tiny_pixel_backbone().make_scheduler("ddim", 5).timesteps[0])
    records = []
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    target = extractor(torch.rand(1, 3, 8, 8))
    solve_universal(
        backbone, feature_match(extractor, target), config, generators=generators_for([0], CPU), log=records.append,
        quiet=True,
    )  # fmt: skip
    steps = [r["timestep"] for r in records if "timestep" in r and "event" not in r]
    plain = [int(t) for t in tiny_pixel_backbone().make_scheduler("ddim", 5).timesteps]
    assert steps == warped_timesteps(first, 5, 2.0) != plain
