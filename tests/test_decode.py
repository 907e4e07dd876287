"""featscope.decode end to end on tiny models: run folder, guidance, batching, seeds, targets."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

import featscope
from featscope.errors import FeatscopeError, RunExistsError
from featscope.targets import save_feature

EXTRACTOR = "tiny_nets:tiny_cnn"
# the forward-guidance chain of `fast`, short (no backward steps in its last step)
FAST = {"num_steps": 8, "recurrence": 2, "guidance_weight": 4.0, "late_steps": 0, "track_from": 0}
FAST |= {"backward_steps": 0, "backward_sparsity": 0.0}


@pytest.mark.parametrize("family", ["sd", "pixel"])
def test_guided_distance_is_at_most_half_the_unguided(family, tiny_sd_folder, tiny_pixel_folder, target_png):
    folder = tiny_sd_folder if family == "sd" else tiny_pixel_folder
    spec = f"{family}:{folder}"
    guided = featscope.decode(target_png, backbone=spec, extractor=EXTRACTOR, quiet=True, **FAST)
    unguided = featscope.decode(
        target_png, backbone=spec, extractor=EXTRACTOR, quiet=True, **{**FAST, "guidance_weight": 0.0}
    )
    g, u = guided.metrics[0]["best_distance"], unguided.metrics[0]["best_distance"]
    assert g <= 0.5 * u, (g, u)


def test_backward_guidance_runs_through_the_vae_and_closes_the_distance(tiny_sd_folder, target_png):
    spec = f"sd:{tiny_sd_folder}"
    forward = featscope.decode(target_png, backbone=spec, extractor=EXTRACTOR, quiet=True, **FAST)
    backward = featscope.decode(
        target_png,
        backbone=spec,
        extractor=EXTRACTOR,
        quiet=True,
        **{**FAST, "backward_steps": 20, "backward_from": 4, "backward_lr": 0.1},
    )
    assert backward.metrics[0]["network_evaluations"] == forward.metrics[0]["network_evaluations"] + 4 * 2 * 20
    f, b = forward.metrics[0]["best_distance"], backward.metrics[0]["best_distance"]
    assert b <= 0.5 * f, (f, b)


def test_the_fast_preset_adds_sparse_backward_steps_through_the_vae(tiny_sd_folder, target_png):
    kwargs = dict(backbone=f"sd:{tiny_sd_folder}", extractor=EXTRACTOR, quiet=True, num_steps=8, guidance_weight=4.0)
    chain = featscope.decode(target_png, preset="fast", **kwargs, backward_steps=0)  # the same chain without them
    shipped = featscope.decode(target_png, preset="fast", **kwargs)
    # 7 steps x K 2 scored before the update; the last step: K 1, scored before and after, 159 backward steps;
    # and the two passes that score the final and the best image
    assert shipped.metrics[0]["network_evaluations"] == 7 * 2 + 1 + 1 + 159 + 2
    c, s = chain.metrics[0]["best_distance"], shipped.metrics[0]["best_distance"]
    assert s < c, (c, s)


def test_run_folder_layout_and_reproducibility(tiny_sd_folder, target_png, tmp_path):
    kwargs = dict(backbone=f"sd:{tiny_sd_folder}", extractor=EXTRACTOR, quiet=True, seed=7, save_every=4, **FAST)
    first = featscope.decode(target_png, out=tmp_path / "a", **kwargs)
    second = featscope.decode(target_png, out=tmp_path / "b", **kwargs)
    run = first.run_dir
    for name in ("config.yaml", "final.png", "best.png", "target.png", "log.jsonl", "metrics.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "steps").iterdir()) == ["step0000_0.png", "step0004_0.png", "step0007_0.png"]
    assert not list(tmp_path.glob(".*partial"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 7 and config["settings"]["guidance_weight"] == 4.0 and config["extractor"] == EXTRACTOR
    metrics = json.loads((run / "metrics.json").read_text())
    sample = metrics["samples"][0]
    assert sample["network_evaluations"] == 2 * 8 * 2 + 2
    assert sample["best_distance"] <= sample["final_distance"] + 1e-6
    assert {"final_cosine", "best_cosine", "wall_seconds", "peak_memory_mb"} <= set(sample)
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(8))
    for name in ("final.png", "best.png"):
        assert (run / name).read_bytes() == (second.run_dir / name).read_bytes()
    assert first.summary == metrics["summary"]  # what the CLI prints comes from the result, not the disk
    shown = repr(first)  # a short summary, not tensors
    assert shown.startswith("DecodeResult(1 image, best distance ") and "tensor" not in shown and str(run) in shown
    with pytest.raises(RunExistsError, match="--overwrite"):
        featscope.decode(target_png, out=run, **kwargs)
    featscope.decode(target_png, out=run, overwrite=True, **kwargs)


def test_several_targets_and_samples_in_one_batch(tiny_pixel_folder, target_png, tmp_path):
    other = tmp_path / "flat.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(other)
    # a moderate weight: with w_g = 4 a random UNet amplifies float rounding (batched vs single convs) chaotically
    kwargs = dict(
        backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True, **{**FAST, "guidance_weight": 0.5}
    )
    batch = featscope.decode([target_png, other], num_samples=2, out=tmp_path / "run", **kwargs)
    assert batch.names == ["noise_s0", "noise_s1", "flat_s0", "flat_s1"]
    assert [m["seed"] for m in batch.metrics] == [0, 1, 0, 1]
    assert {p.name for p in batch.run_dir.glob("final_*.png")} == {f"final_{i}.png" for i in range(4)}
    assert (batch.run_dir / "target_1.png").is_file()
    alone = featscope.decode(other, seed=1, **kwargs)
    torch.testing.assert_close(alone.final[0], batch.final[3], atol=1e-3, rtol=0)


def test_tensor_targets_and_their_shape_check(tiny_pixel_folder, target_png, tmp_path):
    extractor = featscope.load_extractor(EXTRACTOR)
    from featscope.images import load_image

    feature = extractor.target_features(load_image(target_png))[0]
    kwargs = dict(backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True, **FAST)
    from_image = featscope.decode(target_png, **kwargs)
    for suffix in (".safetensors", ".pt", ".npy"):
        path = save_feature(feature, tmp_path / f"feature{suffix}")
        from_file = featscope.decode(path, **kwargs)
        torch.testing.assert_close(from_file.final, from_image.final)
    save_feature(torch.zeros(5), tmp_path / "wrong.pt")
    with pytest.raises(FeatscopeError, match=r"shape \(5,\).*\(16,\)"):
        featscope.decode(tmp_path / "wrong.pt", **kwargs)


def test_text_target_needs_a_text_tower(tiny_pixel_folder):
    with pytest.raises(FeatscopeError, match="no text tower"):
        featscope.decode(text="a red star", backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True)


def test_result_renders_in_notebooks(tiny_pixel_folder, target_png):
    result = featscope.decode(
        target_png, backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True, **{**FAST, "num_steps": 2}
    )
    page = result._repr_html_()
    assert page.count("data:image/png;base64") == 3 and "noise" in page


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_keeps_guidance_working(dtype, tiny_pixel_folder, target_png):
    if dtype == "fp16":
        pytest.importorskip("torch.cuda")
        if not torch.cuda.is_available():
            pytest.skip("fp16 autocast needs a GPU")
    kwargs = dict(backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True, **FAST)
    reduced = featscope.decode(target_png, dtype=dtype, **kwargs)
    unguided = featscope.decode(target_png, **{**kwargs, "guidance_weight": 0.0})
    assert torch.isfinite(reduced.final).all()
    assert reduced.metrics[0]["best_distance"] <= 0.5 * unguided.metrics[0]["best_distance"]


def test_config_is_a_preset_or_settings_and_the_core_gives_the_same_numbers(tiny_pixel_folder, target_png):
    kwargs = dict(backbone=f"pixel:{tiny_pixel_folder}", extractor=EXTRACTOR, quiet=True)
    # `fast` is the settings' defaults on the step schedule rho 1.5, with sparse backward steps in its last step
    config = featscope.UniversalConfig(
        num_steps=3, recurrence=1, guidance_weight=4.0, schedule_power=1.5, late_recurrence=1, late_steps=1,
        track_from=-1, backward_steps=159, backward_lr=0.003, backward_from=-1, backward_sparsity=1.0,
    )  # fmt: skip
    by_config = featscope.decode(target_png, config=config, **kwargs)
    by_preset = featscope.decode(target_png, preset="fast", num_steps=3, recurrence=1, guidance_weight=4.0, **kwargs)
    assert by_config.config["preset"] is None and by_preset.config["preset"] == "fast"
    assert by_config.config["settings"] == by_preset.config["settings"]
    assert torch.equal(by_config.best, by_preset.best)
    with pytest.raises(FeatscopeError, match="not both"):
        featscope.decode(target_png, config="fast", preset="fast", **kwargs)
    with pytest.raises(FeatscopeError, match="unknown preset"):
        featscope.decode(target_png, config="fats", **kwargs)
    backbone, extractor = featscope.load_backbone(kwargs["backbone"]), featscope.load_extractor(EXTRACTOR)
    features = featscope.build_targets(extractor, backbone.image_size, files=[target_png]).features
    core = featscope.decode_features(backbone, extractor, features, config, [0], quiet=True)
    assert torch.equal(core.best, by_config.best) and torch.equal(core.final, by_config.final)
    numbers = ("final_distance", "best_distance", "final_cosine", "best_cosine", "best_found_at", "network_evaluations")
    assert [core.metrics[0][k] for k in numbers] == [by_config.metrics[0][k] for k in numbers]
    assert [r["step"] for r in core.trace] == [0, 1, 2] and all(r["first_sample"] == 0 for r in core.trace)
