"""Feature-map inversion with a ControlNet: build, train, resume, reconstruct, evaluate, steer, and user mistakes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featscope import featinv
from featscope.backbones import load_backbone
from featscope.cli import main
from featscope.errors import FeatscopeError
from featscope.featinv.features import detect_layout, from_grid, to_grid
from featscope.featinv.metrics import ssim
from featscope.featinv.model import default_prompt
from featscope.featinv.world import embedded_folder
from featscope.images import load_image, to_uint8
from featscope.targets import save_feature
from featscope.world.render import generate

TINY_CNN = "tiny_nets:tiny_cnn@conv2"  # (4, 8, 8) for 16 px images
WORLD_LAYER = "world:shape-net@block2"  # (64, 16, 16)
QUICK = featinv.TrainConfig(steps=30, batch_size=8, lr=1e-2, sample_every=0, checkpoint_every=1000)
FEW_STEPS = ["--steps", "3", "--quiet", "--device", "cpu"]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sd_model(tiny_sd_folder, tmp_path_factory) -> Path:
    """An untrained FeatInv model on the tiny SD and the tiny CNN, saved as a model folder."""
    folder = tmp_path_factory.mktemp("featinv") / "sd-model"
    featinv.build(f"sd:{tiny_sd_folder}", TINY_CNN, adapter_width=16).save(folder)
    return folder


@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("featinv") / "world-model"
    assert (
        main(
            [
                "featinv",
                "init",
                "--backbone",
                "world:ddpm",
                "--extractor",
                WORLD_LAYER,
                "--adapter-width",
                "8",
                "--out",
                str(folder),
            ]
        )
        == 0
    )
    return folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i, image in enumerate(generate(6, seed=3)[0]):
        Image.fromarray(image).save(folder / f"img_{i}.png")
    return folder


# -- the model ----------------------------------------------------------------------------------
def test_layouts_of_feature_maps():
    assert detect_layout((64, 16, 16), "net") == "nchw"
    assert detect_layout((7, 7, 768), "net") == "nhwc"
    assert detect_layout((1 + 49, 768), "net") == "tokens"
    assert detect_layout((49, 768), "net") == "patches"
    for pooled in ((128,), (128, 1, 1), (12, 768)):
        with pytest.raises(FeatscopeError, match="no spatial map"):
            detect_layout(pooled, "net")
    tokens = torch.randn(2, 1 + 9, 5)
    grid = to_grid(tokens, "tokens")
    assert grid.shape == (2, 5, 3, 3) and torch.equal(grid[:, :, 0, 1], tokens[:, 2])  # class token dropped
    assert torch.equal(from_grid(grid, "tokens", tokens), tokens)
    channels_last = torch.randn(2, 3, 3, 5)
    assert torch.equal(to_grid(channels_last, "nhwc"), channels_last.permute(0, 3, 1, 2))


def test_build_saves_and_reloads(sd_model, tiny_sd_backbone, tmp_path):
    model = featinv.load_model(sd_model)
    config = model.config
    assert (config.channels, config.layout, config.grid, config.adapter_width) == (4, "nchw", [8, 8], 16)
    assert config.feature_shape == [4, 8, 8] and config.prompt == featinv.DEFAULT_PROMPT
    adapter = model.controlnet.controlnet_cond_embedding
    assert [type(m).__name__ for m in adapter.block] == ["Conv2d", "SiLU", "Conv2d", "SiLU", "Conv2d"]
    assert adapter.block[0].out_channels == 16 and adapter.block[-1].out_channels == 8  # the UNet's first block
    features = torch.randn(2, 4, 8, 8)
    assert adapter(features).abs().max() == 0  # zero-initialised: the untrained ControlNet adds nothing
    text = tiny_sd_backbone.encode_prompt(["red cat"] * 2)
    down, mid = model(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), text, features)
    assert all(d.abs().max() == 0 for d in down) and mid.abs().max() == 0
    model.save(tmp_path / "copy", dtype=torch.float16)
    again = featinv.load_model(tmp_path / "copy")
    assert again.config == config
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k].half().float(), theirs[k]) for k in ours)


# -- training -----------------------------------------------------------------------------------
def test_training_lowers_the_loss(sd_model, tmp_path):
    featinv.train(sd_model, tmp_path / "run", world=16, config=QUICK, device="cpu", quiet=True)
    loss = losses(tmp_path / "run")
    assert len(loss) == 30
    assert np.mean(loss[-10:]) < 0.85 * np.mean(loss[:10])
    trained = featinv.load_model(tmp_path / "run" / "model")
    assert trained.config.trained_steps == 30
    assert trained.controlnet.controlnet_cond_embedding.block[-1].weight.abs().max() > 0


def test_resumed_run_continues_exactly(sd_model, image_folder, tmp_path):
    config = replace(
        QUICK,
        steps=6,
        batch_size=4,
        grad_accum=2,
        checkpoint_every=3,
        cache_features=True,
        sample_every=3,
        sample_steps=2,
    )
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    featinv.train(sd_model, whole, images=image_folder, config=config, device="cpu", quiet=True)
    featinv.train(sd_model, parts, images=image_folder, config=replace(config, steps=3), device="cpu", quiet=True)
    assert len(losses(parts)) == 3
    featinv.train(sd_model, parts, images=image_folder, config=config, device="cpu", quiet=True)
    assert losses(parts) == losses(whole)
    a, b = (featinv.load_model(run / "model").state_dict() for run in (whole, parts))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "features.safetensors").is_file()
    assert sorted(p.name for p in (whole / "samples").iterdir()) == ["step_0000003.png", "step_0000006.png"]


# -- reconstruction -----------------------------------------------------------------------------
def test_reconstruct_is_seeded_batched_and_guided(sd_model, tiny_sd_backbone):
    model = featinv.load_model(sd_model)
    images = torch.from_numpy(generate(3, seed=5)[0]).permute(0, 3, 1, 2).float() / 255
    features = featinv.encode(model, images)
    assert features.shape == (3, 4, 8, 8)
    settings = featinv.SampleSettings(num_steps=3, seed=7)
    whole = featinv.reconstruct(model, features, backbone=tiny_sd_backbone, settings=settings).images
    batched = featinv.reconstruct(
        model, features, backbone=tiny_sd_backbone, settings=replace(settings, batch_size=2)
    ).images
    assert whole.shape == (3, 3, 16, 16) and 0 <= whole.min() and whole.max() <= 1
    assert torch.allclose(whole, batched, atol=1e-5)
    unguided = featinv.reconstruct(
        model, features, backbone=tiny_sd_backbone, settings=replace(settings, guidance_scale=1.0)
    ).images
    assert not torch.allclose(whole, unguided)


def test_reconstruct_eval_and_steer_on_the_world(world_model, tmp_path):
    common = ["--model", str(world_model), *FEW_STEPS]
    assert main(["featinv", "reconstruct", "--world", "2", "--out", str(tmp_path / "rec"), *common]) == 0
    assert {"final_0.png", "final_1.png", "target_0.png", "sheet.png", "metrics.json"} <= {
        p.name for p in (tmp_path / "rec").iterdir()
    }
    assert main(["featinv", "eval", "--world", "3", "--out", str(tmp_path / "eval"), *common]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["images"] == 3 and len(metrics["per_image"]) == 3
    assert -1 <= summary["cosine_median"] <= 1 and -1 <= summary["cosine_pooled"] <= 1
    assert 0 <= summary["top1_agreement"] <= 1 and summary["mse"] >= 0 and summary["ssim"] <= 1
    assert summary["top5_agreement"] is None and any("only 5 classes" in n for n in metrics["notes"])
    assert any("LPIPS" in n for n in metrics["notes"]) or summary["lpips"] is not None
    pixels = generate(2, seed=11)[0]
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"w{i}.png")
    steer = [
        "featinv",
        "steer",
        str(tmp_path / "w0.png"),
        "--edit",
        "mix",
        "--other",
        str(tmp_path / "w1.png"),
        "--region",
        "right",
        "--strengths",
        "0,0.5,1",
        "--out",
        str(tmp_path / "steer"),
        *common,
    ]
    assert main(steer) == 0
    strip = np.array(Image.open(tmp_path / "steer" / "sheet.png"))
    assert strip.shape[1] == 4 * strip.shape[0]  # the source image, then one column per strength
    assert len(json.loads((tmp_path / "steer" / "metrics.json").read_text())["cosine_median_to_edited"]) == 3


def test_steer_at_strength_zero_is_the_plain_reconstruction():
    model = featinv.load_model(embedded_folder())  # trained: an edit of its features shows in the image
    images = torch.from_numpy(generate(2, seed=12)[0]).permute(0, 3, 1, 2).float() / 255
    features = featinv.encode(model, images)
    settings = featinv.SampleSettings(num_steps=2, seed=3)
    plain = featinv.reconstruct(model, features[:1], settings=settings).images
    edit = featinv.make_edit(model, "scale", features[:1], channels=[0, 5], region="0:8,0:16")
    strip = featinv.steer(model, features[:1], edit, [1.0, 0.0], settings=settings).images
    # the strip runs both strengths in one batch: float32 convolutions then differ from the batch of one by up to
    # 2e-5 on some CPUs (AVX2, measured), against an edit that moves pixels by 0.05
    assert torch.allclose(strip[0], plain[0], atol=1e-4) and not torch.allclose(strip[1], plain[0], atol=1e-2)
    edited = edit.apply(features[:1], 0.0)
    assert edited[0, 5, :8].abs().max() == 0 and torch.equal(edited[0, 5, 8:], features[0, 5, 8:])


def test_the_cores_give_the_pixels_and_metrics_the_commands_write(tmp_path):
    """The commands only load, call the core and write: the cores on tensors give the same files' content."""
    model = featinv.load_model(embedded_folder())
    files = []
    for i, image in enumerate(generate(2, seed=13)[0]):
        Image.fromarray(image).save(tmp_path / f"w{i}.png")
        files.append(str(tmp_path / f"w{i}.png"))
    # as the commands read them: maps one image at a time, images stacked contiguous (convolutions of channels-last
    # tensors, as load_image returns, differ by float noise)
    features = torch.cat([featinv.encode(model, load_image(f)) for f in files])
    images = torch.cat([load_image(f) for f in files]).contiguous()
    settings = featinv.SampleSettings(num_steps=3)
    common = ["--model", str(embedded_folder()), *FEW_STEPS]

    def pixels(folder: Path, name: str) -> np.ndarray:
        return np.array(Image.open(tmp_path / folder / name))

    assert main(["featinv", "reconstruct", *files, "--out", str(tmp_path / "rec"), *common]) == 0
    result = featinv.reconstruct(model, features, settings=settings)
    assert result.seeds == [100, 101] and torch.equal(result.features, features)
    for i in range(2):
        assert np.array_equal(pixels("rec", f"final_{i}.png"), to_uint8(result.images)[i])
        assert np.array_equal(pixels("rec", f"target_{i}.png"), to_uint8(images)[i])

    assert main(["featinv", "eval", *files, "--out", str(tmp_path / "eval"), *common]) == 0
    evaluation = featinv.evaluate(model, images, settings=settings)
    for i in range(2):  # evaluate encodes the images as one batch: up to float noise from the reconstructions above
        assert np.array_equal(pixels("eval", f"final_{i}.png"), to_uint8(evaluation.images)[i])
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {k: saved["summary"][k] for k in evaluation.summary} == evaluation.summary
    assert [{k: row[k] for k in evaluation.per_image} for row in saved["per_image"]] == [
        {k: (v[i] if v else None) for k, v in evaluation.per_image.items()} for i in range(2)
    ]

    steer = ["featinv", "steer", files[0], "--edit", "scale", "--channels", "0,5", "--strengths", "1,0"]
    assert main([*steer, "--out", str(tmp_path / "steer"), *common]) == 0
    edit = featinv.make_edit(model, "scale", features[:1], channels=[0, 5])
    steered = featinv.steer(model, features[:1], edit, [1, 0], settings=settings)
    assert steered.strengths == [1.0, 0.0] and steered.edited.shape == (2, 64, 16, 16)
    assert steered.edited[1, [0, 5]].abs().max() == 0
    saved = json.loads((tmp_path / "steer" / "metrics.json").read_text())
    assert saved["cosine_median_to_edited"] == steered.cosine_median_to_edited
    for i in range(2):
        assert np.array_equal(pixels("steer", f"final_{i}.png"), to_uint8(steered.images)[i])
    assert np.array_equal(pixels("steer", "target.png"), to_uint8(images)[0])


def test_ssim_of_identical_images_is_one():
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(images, images), torch.ones(2), atol=1e-4)
    assert (ssim(images, torch.rand(2, 3, 32, 32)) < 0.2).all()


# -- user mistakes: one line, exit code 2 --------------------------------------------------------
def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("featscope: error:") and "\n" not in err
    return err


def test_a_layer_without_a_spatial_map_is_refused(tmp_path, capsys):
    code = main(
        [
            "featinv",
            "init",
            "--backbone",
            "world:ddpm",
            "--extractor",
            "world:shape-net@pool",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    assert code == 2 and "no spatial map" in error_line(capsys)
    assert not (tmp_path / "m").exists()


def test_a_feature_map_of_the_wrong_channel_count_is_refused(world_model, tmp_path, capsys):
    torch.save(torch.randn(32, 16, 16), tmp_path / "wrong.pt")
    code = main(
        [
            "featinv",
            "reconstruct",
            str(tmp_path / "wrong.pt"),
            "--model",
            str(world_model),
            "--out",
            str(tmp_path / "rec"),
            *FEW_STEPS,
        ]
    )
    assert code == 2 and "32 channels" in error_line(capsys)


def test_features_of_another_layer_are_refused(world_model, tmp_path, capsys):
    path = tmp_path / "block3.safetensors"
    save_feature(torch.randn(64, 16, 16), path, metadata={"extractor": "world:shape-net@block3", "layer": "block3"})
    code = main(
        ["featinv", "reconstruct", str(path), "--model", str(world_model), "--out", str(tmp_path / "r"), *FEW_STEPS]
    )
    assert code == 2 and "world:shape-net@block3" in error_line(capsys)


def test_resuming_with_a_model_of_another_network_is_refused(world_model, tmp_path, capsys):
    run = tmp_path / "run"
    train = [
        "featinv",
        "train",
        "--world",
        "4",
        "--out",
        str(run),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--sample-every",
        "0",
        "--quiet",
        "--device",
        "cpu",
    ]
    assert main([*train, "--model", str(world_model)]) == 0
    other = tmp_path / "other"
    assert (
        main(
            [
                "featinv",
                "init",
                "--backbone",
                "world:ddpm",
                "--extractor",
                "world:shape-net@block3",
                "--adapter-width",
                "8",
                "--out",
                str(other),
            ]
        )
        == 0
    )
    assert main([*train, "--model", str(other)]) == 2
    assert "checkpoint of a model for world:shape-net@block2" in error_line(capsys)


def test_the_fixed_prompt_is_empty_for_closed_vocabulary_prompt_encoders(tiny_sd_backbone, tiny_pixel_text_backbone):
    world = load_backbone("world:ddpm")
    assert not world.free_text_prompts and default_prompt(world) == ""  # the world's encoder knows attribute words
    assert not tiny_pixel_text_backbone.free_text_prompts  # a pixel: folder with the world's text encoder
    assert tiny_sd_backbone.free_text_prompts and default_prompt(tiny_sd_backbone) == featinv.DEFAULT_PROMPT
