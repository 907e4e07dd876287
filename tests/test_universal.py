"""The universal solver: each piece of the update against a hand computation, and its behaviour."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from featscope.backbones.base import Backbone
from featscope.devices import generators_for
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.losses import feature_loss
from featscope.objectives import Context, feature_match, neuron
from featscope.solvers.configs import PRESETS, UniversalConfig
from featscope.solvers.universal import (
    backward_delta,
    clamp_by_std,
    gaussian_blur,
    renoise,
    resampled_rows,
    rescale_to,
    solve_universal,
)

CPU = torch.device("cpu")


def tiny_pixel_backbone(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    # no x0 clipping: the published transitions (tested below) have none
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return Backbone(unet, dict(scheduler.config), spec="test:pixel")


def tiny_extractor(seed: int = 1) -> Extractor:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )
    return Extractor(net, name="test:tiny", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_rescale_matches_hand_computation():
    grad, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    out = rescale_to(grad, eps)
    for b in range(2):
        expected = (torch.linalg.norm(eps[b]) / torch.linalg.norm(grad[b])) * grad[b]
        torch.testing.assert_close(out[b], expected)
        assert math.isclose(out[b].norm().item(), eps[b].norm().item(), rel_tol=1e-5)


def test_clamp_matches_hand_computation():
    grad = torch.randn(2, 4, 8, 8) ** 3  # heavy tails, so the clamp bites
    out = clamp_by_std(grad, 3.0)
    for b in range(2):
        low = torch.mean(grad[b]) - 3.0 * torch.std(grad[b])
        high = torch.mean(grad[b]) + 3.0 * torch.std(grad[b])
        torch.testing.assert_close(out[b], torch.clamp(grad[b], low.item(), high.item()))
    assert (out != grad).any()
    assert torch.equal(clamp_by_std(grad, 0.0), grad)


def test_renoise_is_the_forward_step_of_ddpm():
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    abar, betas = scheduler.alphas_cumprod, scheduler.betas
    z, noise, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), 500
    expected = torch.sqrt(1 - betas[t]) * z + torch.sqrt(betas[t]) * noise
    torch.testing.assert_close(renoise(z, abar[t], abar[t - 1], noise), expected)


def test_ddpm_step_matches_the_published_transition():
    backbone = tiny_pixel_backbone()
    scheduler = backbone.make_scheduler("ddpm", 1000)
    betas = scheduler.betas
    abar = scheduler.alphas_cumprod
    z, eps, t = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), 700
    stepped = scheduler.step(eps, t, z, generator=torch.Generator().manual_seed(3)).prev_sample
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    coeff1, coeff2, coeff3 = 1 / torch.sqrt(1 - betas[t]), 1 / torch.sqrt(1 - abar[t]), betas[t]
    expected = coeff1 * (z - coeff2 * coeff3 * eps) + torch.sqrt(betas[t]) * noise
    torch.testing.assert_close(stepped, expected, atol=1e-5, rtol=1e-5)


def test_reference_preset_is_the_published_setting():
    ref = PRESETS["reference"]
    assert (ref.sampler, ref.num_steps, ref.guidance_weight, ref.grad_clip) == ("ddpm", 1000, 4.0, None)
    assert ref.clip_threshold([None]) == 3.0 and ref.clip_threshold([2.0, None]) == 2.0 and not ref.clamp
    assert (ref.early_recurrence, ref.early_steps, ref.recurrence) == (1000, 5, 8)
    assert ref.total_iterations() == 12_960
    assert ref.prompt == "" and ref.guidance_scale == 1.0


def _solve(config: UniversalConfig, seeds=(0, 1), target=None, extractor=None):
    backbone, extractor = tiny_pixel_backbone(), extractor or tiny_extractor()
    if target is None:
        torch.manual_seed(5)
        target = extractor(torch.rand(len(seeds), 3, 8, 8))
    out = solve_universal(
        backbone, feature_match(extractor, target), config, generators=generators_for(list(seeds), CPU), quiet=True
    )
    with torch.no_grad():
        return out, feature_loss(extractor(out.best), target), target


def test_guidance_lowers_the_feature_distance():
    config = UniversalConfig(num_steps=20, guidance_weight=4.0, recurrence=2)
    _, guided, target = _solve(config)
    _, unguided, _ = _solve(config.with_overrides(guidance_weight=0.0), target=target)
    assert (guided <= 0.5 * unguided).all(), (guided, unguided)


def test_same_seed_same_image_and_batch_independence():
    config = UniversalConfig(num_steps=5, guidance_weight=0.5, recurrence=2)
    a, _, target = _solve(config, seeds=(3, 4))
    b, _, _ = _solve(config, seeds=(3, 4), target=target)
    assert torch.equal(a.final, b.final) and torch.equal(a.best, b.best)
    single, _, _ = _solve(config, seeds=(4,), target=target[1:])
    torch.testing.assert_close(single.final[0], a.final[1], atol=1e-4, rtol=1e-4)
    other, _, _ = _solve(config, seeds=(5, 6), target=target)
    assert not torch.equal(other.final, a.final)


def test_evaluation_count_and_recurrence_schedule():
    config = UniversalConfig(num_steps=6, recurrence=2, early_recurrence=4, early_steps=2, guidance_weight=0.1)
    out, _, _ = _solve(config, seeds=(0,))
    assert config.total_iterations() == 2 * 4 + 4 * 2
    assert out.evaluations == 2 * config.total_iterations()  # before and after each guided update
    late = config.with_overrides(track_from=5)  # the updated estimate scored in the last step only
    assert [late.tracked_at(i) for i in range(6)] == [False] * 5 + [True]
    out_late, _, _ = _solve(late, seeds=(0,))
    assert out_late.evaluations == late.network_evaluations() == config.total_iterations() + 2
    assert all(w["step"] == 5 for w in out_late.best_where if w["after_guidance"])


def test_late_refinement_schedule():
    config = UniversalConfig(
        num_steps=6, recurrence=2, early_recurrence=4, early_steps=2, late_recurrence=3, late_steps=1
    )
    assert [config.recurrence_at(i) for i in range(6)] == [4, 4, 2, 2, 2, 3]
    out, _, _ = _solve(config.with_overrides(guidance_weight=0.1), seeds=(0,))
    assert out.evaluations == 2 * (2 * 4 + 3 * 2 + 3)
    overlap = UniversalConfig(num_steps=3, early_recurrence=5, early_steps=2, late_recurrence=7, late_steps=2)
    assert [overlap.recurrence_at(i) for i in range(3)] == [5, 5, 7]  # early emphasis wins where both apply


def test_refine_preset_stays_within_a_tenth_of_reference_evaluations():
    refine, reference = PRESETS["refine"], PRESETS["reference"]
    assert [refine.backward_at(i) for i in (0, 43, 44, 49)] == [0, 0, 80, 80]
    assert refine.network_evaluations() == 50 * 2 * 2 + 6 * 2 * 80 == 1160
    assert reference.network_evaluations() == 2 * reference.total_iterations() == 2 * 12960
    assert 10 * refine.network_evaluations() <= reference.network_evaluations()


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])  # DPM-Solver++(2M) carries each row's last x0 across steps
def test_candidates_are_counted_and_the_nearest_is_kept(sampler):
    config = UniversalConfig(num_steps=4, recurrence=1, guidance_weight=0.5, candidates=3, select_after=2,
                             sampler=sampler)  # fmt: skip
    assert [config.rows_at(i) for i in range(4)] == [3, 3, 1, 1]
    records = []
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    target = extractor(torch.rand(2, 3, 8, 8))
    out = solve_universal(
        backbone,
        feature_match(extractor, target),
        config,
        generators=generators_for([0, 1], CPU),
        log=records.append,
        quiet=True,
    )
    assert out.final.shape == out.best.shape == (2, 3, 8, 8) and len(out.best_where) == 2
    assert out.evaluations == 2 * (3 * 2 + 2) == 2 * config.total_iterations() == config.network_evaluations()
    (chosen,) = [r for r in records if r.get("event") == "candidates_selected"]
    assert chosen["step"] == 1 and chosen["kept"] == [min(range(3), key=row.__getitem__) for row in chosen["distances"]]
    assert len({d for row in chosen["distances"] for d in row}) == 6  # six different trajectories
    alone = solve_universal(
        backbone, feature_match(extractor, target[1:]), config, generators=generators_for([1], CPU), quiet=True
    )
    torch.testing.assert_close(alone.final[0], out.final[1], atol=1e-4, rtol=1e-4)


def test_systematic_resampling_matches_a_hand_computation():
    # two images of two particles, temperature 1: image 0 weights exp(-1/2), exp(-3/2) -> 0.731, 0.269, so the
    # positions 1/4 and 3/4 pick particles 0 and 1; equal distances keep every particle
    assert resampled_rows(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, 1.0).tolist() == [0, 1, 2, 3]
    assert resampled_rows(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2, 0.1).tolist() == [0, 0, 2, 3]  # greedy: w0 ~ 1
    # four particles d = 1, 1, 1, 10 (mean 3.25): weights 0.327, 0.327, 0.327, 0.020, cumulative 0.327, 0.653,
    # 0.980, 1; positions 1/8, 3/8, 5/8, 7/8 -> 0, 1, 1, 2
    assert resampled_rows(torch.tensor([1.0, 1.0, 1.0, 10.0]), 4, 1.0).tolist() == [0, 1, 1, 2]
    assert resampled_rows(torch.tensor([math.inf, 1.0]), 2, 1.0).tolist() == [1, 1]  # a lost particle is dropped


def test_particles_are_resampled_toward_the_nearest_and_cost_no_extra_evaluation():
    config = UniversalConfig(num_steps=4, recurrence=1, guidance_weight=0.5, candidates=4, select_after=3,
                             resample_every=1, resample_temperature=1e-3, sampler="ddpm")  # fmt: skip
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    target = extractor(torch.rand(2, 3, 8, 8))
    records = []
    out = solve_universal(backbone, feature_match(extractor, target), config, generators=generators_for([0, 1], CPU),
                          log=records.append, quiet=True)  # fmt: skip
    resampled = [r for r in records if r.get("event") == "particles_resampled"]
    assert [r["step"] for r in resampled] == [0, 1]  # at steps 0 and 1, before their transitions; 2 selects
    for r in resampled:  # near-zero temperature: every particle continues the image's nearest one
        for parents, row in zip(r["parents"], r["distances"], strict=True):
            assert all(row[p] == min(row) for p in parents)
    assert len(set(resampled[0]["distances"][0])) == 4  # four trajectories before the first resampling
    assert len(set(resampled[1]["distances"][0])) == 4  # copies of one parent part ways (DDPM's noise)
    assert out.evaluations == 2 * (4 * 3 + 1) == config.network_evaluations()  # tracked: 2 per iteration
    independent = solve_universal(backbone, feature_match(extractor, target), config.with_overrides(resample_every=0),
                                  generators=generators_for([0, 1], CPU), quiet=True)  # fmt: skip
    assert independent.evaluations == out.evaluations
    with pytest.raises(FeatscopeError, match="resamples candidates"):
        UniversalConfig(resample_every=2).validate()


def test_the_first_candidate_is_the_single_run_and_selection_never_does_worse():
    single = UniversalConfig(num_steps=5, recurrence=1, guidance_weight=0.5)  # DDIM, K 1: z_T decides everything
    records_one, records_many = [], []
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    target = extractor(torch.rand(1, 3, 8, 8))
    for config, records in ((single, records_one), (single.with_overrides(candidates=4, select_after=5), records_many)):
        solve_universal(
            backbone,
            feature_match(extractor, target),
            config,
            generators=generators_for([7], CPU),
            log=records.append,
            quiet=True,
        )
    last_single = [r for r in records_one if r.get("step") == 4 and "distance" in r][0]["distance"][0]
    (chosen,) = [r for r in records_many if r.get("event") == "candidates_selected"]
    assert chosen["distances"][0][0] == pytest.approx(last_single, rel=1e-4)
    assert min(chosen["distances"][0]) <= last_single


def test_backward_delta_descends_each_sample_on_its_own_loss():
    centres = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-1.0, 3.0]])

    def distance(x: torch.Tensor) -> torch.Tensor:
        return ((x - centres[: len(x)]) ** 2).sum(1)

    x0 = torch.zeros(3, 2)
    delta = backward_delta(x0, distance, steps=50, lr=0.1)
    assert (distance(x0 + delta) < 0.1 * distance(x0)).all()
    alone = backward_delta(x0[:1], distance, steps=50, lr=0.1)
    torch.testing.assert_close(alone[0], delta[0])
    nan_loss = backward_delta(x0, lambda x: distance(x) * float("nan"), steps=3, lr=0.1)
    assert torch.equal(nan_loss, torch.zeros_like(x0))


def test_blurred_backward_delta_cannot_follow_pixel_level_detail():
    checker = (torch.arange(8).view(-1, 1) + torch.arange(8)).remainder(2).float().mul(2).sub(1).expand(1, 3, 8, 8)
    smooth = torch.linspace(-1, 1, 8).view(1, 1, 1, 8).expand(1, 3, 8, 8)

    def distance_to(pattern: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: ((x - pattern) ** 2).flatten(1).sum(1)

    def share_of(delta: torch.Tensor, pattern: torch.Tensor) -> float:
        return float((delta * pattern).sum() / (pattern * pattern).sum())

    x0 = torch.zeros(1, 3, 8, 8)
    sharp = backward_delta(x0, distance_to(checker), steps=100, lr=0.05)
    assert not sharp.requires_grad
    blurred = backward_delta(x0, distance_to(checker), steps=100, lr=0.05, blur=1.0)
    assert share_of(sharp, checker) > 0.9 and abs(share_of(blurred, checker)) < 0.1
    toward_smooth = backward_delta(x0, distance_to(smooth), steps=100, lr=0.05, blur=1.0)
    assert share_of(toward_smooth, smooth) > 0.5  # a smooth change still gets through
    torch.testing.assert_close(gaussian_blur(smooth, 0.0), smooth)


def test_negative_steps_count_from_the_end():
    from_end = UniversalConfig(
        num_steps=6, backward_steps=3, backward_from=-2, track_from=-1, x0_weight=0.1, x0_from=-3
    )
    from_start = from_end.with_overrides(backward_from=4, track_from=5, x0_from=3)
    for config in (from_end, from_start):
        config.validate()
        assert [config.backward_at(i) for i in range(6)] == [0, 0, 0, 0, 3, 3]
        assert [config.tracked_at(i) for i in range(6)] == [False] * 5 + [True]
        assert [config.x0_at(i) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert from_end.network_evaluations() == from_start.network_evaluations()
    assert from_end.with_overrides(num_steps=3).backward_at(1) == 3  # still the last two steps


def test_sparse_backward_delta_matches_the_proximal_adam_steps_by_hand():
    # a linear distance: the gradient is w at every step, so Adam's bias-corrected moments are m = w, v = w^2,
    # each Adam step moves theta by lr sign(w) and the proximal step takes lr lambda / |w| off again, where
    # lambda = s rms(w); elements with |w| <= lambda never move
    w = torch.tensor([[4.0, 1.0, 0.5, -3.0]])
    lr, s, steps = 0.01, 0.5, 3
    lam = s * float(w.pow(2).mean().sqrt())
    expected = -steps * lr * w.sign() * (1 - lam / w.abs()).clamp_min(0)
    delta = backward_delta(torch.zeros(1, 4), lambda x: (w * x).sum(1), steps=steps, lr=lr, sparsity=s)
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-7)
    assert delta[0, 1] == 0 and delta[0, 2] == 0 and delta[0, 0] < 0 < delta[0, 3]
    dense = backward_delta(torch.zeros(1, 4), lambda x: (w * x).sum(1), steps=steps, lr=lr)
    torch.testing.assert_close(dense, -steps * lr * w.sign(), rtol=1e-5, atol=1e-7)


def test_sparse_backward_guidance_leaves_what_the_network_does_not_see():
    # the network sees only the left half of the image; Adam alone moves the right half too (its tiny
    # gradient is normalised to full steps), the L1 proximal step keeps it as it was
    backbone, base = tiny_pixel_backbone(), tiny_extractor()
    left = torch.ones(1, 1, 8, 8)
    left[..., 4:] = 1e-3
    half = Extractor(
        torch.nn.Sequential(_Scale(left), base.network), name="test:left", mean=(0.5,) * 3, std=(0.25,) * 3
    )
    target = half(torch.rand(1, 3, 8, 8))
    dense = UniversalConfig(num_steps=2, recurrence=1, guidance_weight=0.0, backward_steps=20, backward_lr=0.05)
    changes = {}
    for name, config in (("none", dense.with_overrides(backward_steps=0)), ("dense", dense),
                         ("sparse", dense.with_overrides(backward_sparsity=0.5))):  # fmt: skip
        out = solve_universal(
            backbone, feature_match(half, target), config, generators=generators_for([0], CPU), quiet=True
        )
        changes[name] = out.final
    right = (slice(None), slice(None), slice(None), slice(4, None))
    moved_dense = (changes["dense"] - changes["none"])[right].abs().mean()
    moved_sparse = (changes["sparse"] - changes["none"])[right].abs().mean()
    assert moved_sparse < 0.1 * moved_dense, (moved_sparse, moved_dense)
    assert (changes["sparse"] - changes["none"]).abs().mean() > 0  # the left half still moves


class _Scale(torch.nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_backward_guidance_is_counted_and_brings_the_estimate_closer():
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    target = extractor(torch.rand(2, 3, 8, 8))
    forward_only = UniversalConfig(num_steps=4, recurrence=2, guidance_weight=0.5)
    with_backward = forward_only.with_overrides(backward_steps=25, backward_lr=0.05, backward_from=2)
    assert [with_backward.backward_at(i) for i in range(4)] == [0, 0, 25, 25]
    unguided = with_backward.with_overrides(guidance_weight=0.0)  # tracked only where backward steps run
    assert unguided.network_evaluations() == 2 * 2 * 1 + 2 * 2 * (1 + 1 + 25)
    out = solve_universal(
        backbone, feature_match(extractor, target), unguided, generators=generators_for([0, 1], CPU), quiet=True
    )
    assert out.evaluations == unguided.network_evaluations()
    runs = {}
    for name, config in (("forward", forward_only), ("backward", with_backward)):
        records = []
        out = solve_universal(
            backbone,
            feature_match(extractor, target),
            config,
            generators=generators_for([0, 1], CPU),
            log=records.append,
            quiet=True,
        )
        runs[name] = (out, [r for r in records if "distance" in r])
    assert runs["forward"][0].evaluations == 2 * 8 == forward_only.network_evaluations()
    assert runs["backward"][0].evaluations == 2 * 8 + 25 * 2 * 2 == with_backward.network_evaluations()
    for step in (0, 1):  # identical until backward guidance starts
        assert runs["backward"][1][step]["distance"] == pytest.approx(runs["forward"][1][step]["distance"])
    for forward_best, backward_best in zip(runs["forward"][0].best_where, runs["backward"][0].best_where, strict=True):
        assert backward_best["distance"] < 0.5 * forward_best["distance"], (forward_best, backward_best)


class _NaNAtFirstCall(torch.nn.Module):
    """A network whose output is NaN on its first call (a flaky guidance step)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        return out * float("nan") if self.calls == 1 else out


def test_non_finite_guidance_is_skipped_and_logged():
    base = tiny_extractor()
    flaky = Extractor(_NaNAtFirstCall(base.network), name="test:flaky", mean=(0.5,) * 3, std=(0.25,) * 3)
    records = []
    target = base(torch.rand(1, 3, 8, 8))
    out = solve_universal(
        tiny_pixel_backbone(),
        feature_match(flaky, target),
        UniversalConfig(num_steps=4, guidance_weight=0.5),
        generators=generators_for([0], CPU),
        log=records.append,
        quiet=True,
    )
    assert torch.isfinite(out.final).all() and torch.isfinite(out.best).all()
    skipped = [r for r in records if r.get("event") == "guidance_skipped"]
    assert len(skipped) == 1 and skipped[0]["step"] == 0 and skipped[0]["k"] == 0


def test_bad_settings_are_user_errors():
    with pytest.raises(FeatscopeError, match="sampler"):
        UniversalConfig(sampler="euler").validate()
    with pytest.raises(FeatscopeError, match="select_after"):
        UniversalConfig(candidates=4).validate()
    with pytest.raises(FeatscopeError, match="candidates"):
        UniversalConfig(candidates=0).validate()
    with pytest.raises(FeatscopeError, match="backward_from"):
        UniversalConfig(num_steps=10, backward_steps=5, backward_from=10).validate()
    with pytest.raises(FeatscopeError, match="backward_lr"):
        UniversalConfig(backward_steps=5, backward_lr=0).validate()
    with pytest.raises(FeatscopeError, match="--backward-blur"):
        UniversalConfig(backward_steps=5, backward_blur=-1).validate()
    with pytest.raises(FeatscopeError, match="--backward-from"):
        UniversalConfig(num_steps=10, backward_steps=5, backward_from=-11).validate()
    with pytest.raises(FeatscopeError, match="--track-from"):
        UniversalConfig(num_steps=10, track_from=10).validate()
    with pytest.raises(FeatscopeError, match="--backward-sparsity"):
        UniversalConfig(backward_steps=5, backward_sparsity=-0.5).validate()
    with pytest.raises(FeatscopeError, match="unknown solver setting"):
        UniversalConfig().with_overrides(wg=3)


def test_feature_match_gives_the_feature_distance_of_each_row_and_candidate():
    extractor = tiny_extractor()
    images, target = torch.rand(4, 3, 8, 8), extractor(torch.rand(2, 3, 8, 8))
    objective = feature_match(extractor, target)
    index = torch.tensor([0, 0, 1, 1])  # two candidates of each of two samples
    with torch.no_grad():
        expected = feature_loss(extractor(images).float(), target.repeat_interleave(2, 0), "l2")
        assert torch.equal(objective(Context(images, images, index=index)), expected)
        assert torch.equal(objective(Context(images[:2], images[:2])), feature_loss(extractor(images[:2]), target))
        cosine = feature_match(extractor, target, "cosine")(Context(images[:2], images[:2]))
    torch.testing.assert_close(cosine, feature_loss(extractor(images[:2]), target, "cosine"))
    with pytest.raises(FeatscopeError, match="target rows"):
        objective(Context(images[:3], images[:3]))


# Recorded with the solver as it was before it took objectives (feature loss written inside it), same setup.
_BEFORE_OBJECTIVES = {
    "steps": [[2.148723602294922, 1.0117863416671753], [1.2966610193252563, 0.9320034980773926],
              [1.0597217082977295, 0.6741452813148499], [0.9475998878479004, 0.6170175075531006]],
    "selection": [[1.2966610193252563, 1.4426380395889282], [1.263822317123413, 0.9320034980773926]],
    "best": [0.4827007055282593, 0.4519825875759125],
}  # fmt: skip


def test_feature_match_reproduces_the_distances_of_the_solver_before_objectives():
    config = UniversalConfig(
        num_steps=4, recurrence=2, guidance_weight=0.5, candidates=2, select_after=2, backward_steps=2, backward_from=3
    )
    records = []
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    torch.manual_seed(5)
    target = extractor(torch.rand(2, 3, 8, 8))
    out = solve_universal(
        backbone, feature_match(extractor, target), config, generators=generators_for([0, 1], CPU), quiet=True,
        log=records.append,
    )  # fmt: skip
    steps = [r["distance"] for r in records if "distance" in r and "event" not in r]
    (chosen,) = [r["distances"] for r in records if r.get("event") == "candidates_selected"]
    for got, before in ((steps, "steps"), (chosen, "selection")):
        for row, expected in zip(got, _BEFORE_OBJECTIVES[before], strict=True):
            assert row == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert [w["distance"] for w in out.best_where] == pytest.approx(_BEFORE_OBJECTIVES["best"], rel=1e-6)


def test_the_universal_solver_decodes_a_neuron():
    backbone, extractor = tiny_pixel_backbone(), tiny_extractor()
    objective = neuron(extractor, "0", channel=3)  # raise channel 3 of the first convolution
    guided = UniversalConfig(num_steps=10, recurrence=2, guidance_weight=4.0)
    values = {}
    for name, config in (("guided", guided), ("unguided", guided.with_overrides(guidance_weight=0.0))):
        out = solve_universal(backbone, objective, config, generators=generators_for([0, 1], CPU), quiet=True)
        with torch.no_grad():
            values[name] = objective(Context(out.best, out.best))
    assert (values["guided"] < values["unguided"] - 0.5).all(), values
