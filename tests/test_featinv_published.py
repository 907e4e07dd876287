"""FeatInv as published: the network's input size from the spec, the published checkpoint's layout, random
resized crops, FID, miniSD single files and even region halves (tiny models; the 288 px path at 24 px)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import save_file

from featscope import featinv
from featscope.backbones import load_backbone
from featscope.cli import main
from featscope.errors import FeatscopeError
from featscope.extractors import Spec, list_layers, load_extractor, parse_spec
from featscope.featinv.config import PRESETS, TrainConfig
from featscope.featinv.data import draw, flipped, square
from featscope.featinv.fid import frechet_distance
from featscope.featinv.inputs import read_inputs
from featscope.featinv.model import FeatInvConfig, FeatInvModel
from featscope.featinv.published import load_published
from featscope.featinv.steering import region_mask
from featscope.featinv.training import Trainer
from featscope.featinv.world_images import WorldImages
from tiny_sd import build_tiny_sd, featinv_to_ldm, randomize, save_single_file

SIZED = "tiny_nets:tiny_cnn@conv2@24px"  # the network at 24 px (its default: 16): (4, 12, 12) maps
FEW = ["--steps", "2", "--quiet", "--device", "cpu"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("featscope: error:") and "\n" not in err
    return err


@pytest.fixture(scope="module")
def published(tiny_sd_folder, tmp_path_factory):
    """A random tiny FeatInv model and the same weights as a Lightning .ckpt in the published LDM layout
    (control_model.* next to the backbone's model.diffusion_model.*, first_stage_model.*, ...)."""
    model = randomize(featinv.build(f"sd:{tiny_sd_folder}", SIZED, adapter_width=16), seed=7)
    path = tmp_path_factory.mktemp("published") / "control_featinv_tiny.ckpt"
    save_single_file(build_tiny_sd(), path, featinv_to_ldm(model.controlnet))
    return model, path


# -- the input size ---------------------------------------------------------------------------------
def test_a_spec_sets_the_network_input_size():
    assert parse_spec("timm:convnext_base@stages.3@288px") == Spec("timm", "convnext_base", "stages.3", (288, 288))
    assert parse_spec("torchvision:resnet50@224x320px") == Spec("torchvision", "resnet50", None, (224, 320))
    extractor = load_extractor(SIZED)
    assert extractor.input_size == (24, 24) and extractor.spec == SIZED
    assert extractor.target_features(torch.rand(1, 3, 40, 30)).shape == (1, 4, 12, 12)
    assert load_extractor("tiny_nets:tiny_cnn@conv2").spec == "tiny_nets:tiny_cnn@conv2"  # no size: none added
    assert dict((n, s) for n, _, s in list_layers("tiny_nets:tiny_cnn@24px"))["conv2"] == (4, 12, 12)
    with pytest.raises(FeatscopeError, match="positive"):
        parse_spec("tiny_nets:tiny_cnn@0px")


def test_the_published_preset_conditions_on_1024x9x9_maps():
    preset = PRESETS["published"]
    extractor = load_extractor(preset.extractor, pretrained=False)  # the architecture; weights are not needed
    assert extractor.name == "timm:convnext_base.fb_in22k_ft_in1k" and extractor.input_size == (288, 288)
    assert extractor.target_features(torch.rand(1, 3, 300, 400)).shape == (1, 1024, 9, 9)
    assert (preset.backbone, preset.adapter_width) == ("sd:lambdalabs/miniSD-diffusers", 512)


# -- the published checkpoint ------------------------------------------------------------------------
def test_the_published_checkpoint_trains_reconstructs_and_evaluates(published, tiny_sd_folder, tmp_path):
    original, ckpt = published
    folder = tmp_path / "model"
    init = ["featinv", "init", "--backbone", f"sd:{tiny_sd_folder}", "--extractor", SIZED, "--adapter-width", "16"]
    assert main([*init, "--weights", str(ckpt), "--out", str(folder)]) == 0
    model = featinv.load_model(folder)
    assert (
        model.config.extractor == SIZED and model.config.image_size == 24 and model.config.feature_shape == [4, 12, 12]
    )
    ours, theirs = original.state_dict(), model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    train = ["featinv", "train", "--model", str(folder), "--world", "8", "--epochs", "3", "--batch-size", "8"]
    assert main([*train, "--out", str(tmp_path / "run"), *FEW]) == 0
    trained = tmp_path / "run" / "model"
    assert "crop: random" in (tmp_path / "run" / "config.yaml").read_text()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3  # 3 epochs of 8 images at batch 8
    assert (
        main(["featinv", "eval", "--model", str(trained), "--world", "3", "--out", str(tmp_path / "eval"), *FEW]) == 0
    )
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["summary"]["fid"] > 0 and -1 <= metrics["summary"]["cosine_median"] <= 1
    assert any(f"{SIZED} maps of both images at 24x24 px" in note for note in metrics["notes"])


def test_a_safetensors_checkpoint_loads_the_same(published, tiny_sd_folder, tmp_path):
    original, ckpt = published
    path = save_single_file(build_tiny_sd(), tmp_path / "featinv.safetensors", featinv_to_ldm(original.controlnet))
    model = load_published(featinv.build(f"sd:{tiny_sd_folder}", SIZED, adapter_width=16, seed=3), path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.state_dict().items())


def test_an_sd1_layout_controlnet_maps_all_13_residuals(tmp_path):
    """SD 1.x's layout (4 levels of 2 blocks, cross-attention in 3, narrow): 12 zero convs and the mid one."""
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=2,
        cross_attention_dim=16,
        attention_head_dim=8,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    config = FeatInvConfig("sd:x", "n@l@288px", "l", [64, 9, 9], 64, "nchw", [32, 32], 288, adapter_width=32)
    original = randomize(FeatInvModel(ControlNetModel.from_unet(unet), config), seed=1)
    state = featinv_to_ldm(original.controlnet)
    assert "control_model.zero_convs.11.0.weight" in state and "control_model.middle_block_out.0.bias" in state
    save_file(state, tmp_path / "sd1.safetensors")
    model = load_published(FeatInvModel(ControlNetModel.from_unet(unet), config), tmp_path / "sd1.safetensors")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.state_dict().items())


def test_other_checkpoints_are_refused_in_one_line(published, tiny_sd_folder, tiny_sd_ckpt, tmp_path, capsys):
    original, _ = published
    init = ["featinv", "init", "--backbone", f"sd:{tiny_sd_folder}", "--extractor", SIZED, "--adapter-width"]
    state = featinv_to_ldm(original.controlnet)
    stock = {k.replace("input_hint_block.block.1", "input_hint_block.0"): v for k, v in state.items()}
    save_file(stock, tmp_path / "stock.safetensors")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint")
    cases = [
        (tiny_sd_ckpt, "16", "holds no control_model.* weights"),
        (tmp_path / "stock.safetensors", "16", "an image ControlNet"),
        (tmp_path / "notes.ckpt", "16", "not a readable checkpoint"),
        (published[1], "8", "does not fit"),  # built with another adapter width than the file's
    ]
    for path, width, message in cases:
        assert main([*init, width, "--weights", str(path), "--out", str(tmp_path / "m"), "--overwrite"]) == 2
        assert message in error_line(capsys)
    assert main(["featinv", "init", "--extractor", SIZED, "--out", str(tmp_path / "m2")]) == 2
    assert "--preset published" in error_line(capsys)


def test_minisd_single_files_ask_for_their_config(published, tiny_sd_single_file, tiny_sd_folder, tmp_path):
    named = shutil.copy(tiny_sd_single_file, tmp_path / "miniSD.safetensors")
    for path in (named, published[1]):  # by name, and a FeatInv checkpoint (which holds miniSD too)
        with pytest.raises(FeatscopeError, match="--backbone-config lambdalabs/miniSD-diffusers"):
            load_backbone(f"sd:{path}")
    assert load_backbone(f"sd:{named}", config=tiny_sd_folder).latent_shape == (4, 8, 8)


# -- training crops ----------------------------------------------------------------------------------
def test_training_takes_one_random_crop_for_the_network_and_the_target(published, tiny_sd_backbone):
    model, _ = published
    extractor = load_extractor(SIZED)
    source = WorldImages(4, seed=1, size=model.config.image_size)
    assert TrainConfig().crop == "random"
    trainer = Trainer(model, tiny_sd_backbone, extractor, source, TrainConfig())
    plan = draw(0, 5, 0, 0, len(source), 4, 0.0, flip=True, crop=True)
    images, features = trainer.batch(plan, torch.device("cpu"))
    crops = flipped(source.crops(plan.indices, plan.crop_seeds), plan.hflip, plan.vflip)
    assert crops.shape[-1] == 24 and images.shape[-1] == 16  # the network's size, the backbone's size
    assert torch.equal(features, extractor.target_features(crops)) and torch.equal(images, square(crops, 16))
    assert not torch.equal(source.crops(plan.indices, plan.crop_seeds), source.load(plan.indices))
    centre = draw(0, 5, 0, 0, len(source), 4, 0.0, flip=False, crop=False)
    assert centre.crop_seeds is None and torch.equal(
        trainer.batch(centre, "cpu")[0], square(source.load(centre.indices), 16)
    )


# -- FID and region halves -----------------------------------------------------------------------------
def test_fid_is_zero_for_a_set_with_itself_and_positive_between_sets():
    extractor = load_extractor("tiny_nets:tiny_cnn@conv2")
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(8, 3, 16, 16, generator=gen), torch.rand(8, 3, 16, 16, generator=gen) ** 3
    same, note = frechet_distance(a, a, extractor, "nchw", 4)
    assert abs(same) < 1e-6 and "mean-pooled (4-d)" in note
    apart, _ = frechet_distance(a, b, extractor, "nchw", 4)
    assert apart > 1e-3
    assert frechet_distance(a[:1], b[:1], extractor, "nchw", 4)[0] is None


def test_left_and_right_split_an_odd_grid_evenly():
    left, right = region_mask("left", (9, 9)), region_mask("right", (9, 9))
    assert torch.equal(left + right, torch.ones(9, 9)) and left.sum() == right.sum() == 40.5
    assert torch.equal(region_mask("top", (7, 4))[3], torch.full((4,), 0.5))
    assert torch.equal(region_mask("left", (2, 4)), torch.tensor([[1.0, 1, 0, 0]] * 2))


def test_same_seed_gives_every_image_the_published_single_noise(published, tiny_sd_backbone):
    model, _ = published
    features = torch.randn(1, 4, 12, 12).repeat(2, 1, 1, 1)
    settings = featinv.SampleSettings(num_steps=2, seed=100)
    apart = featinv.reconstruct(model, features, backbone=tiny_sd_backbone, settings=settings).images
    same = featinv.reconstruct(model, features, backbone=tiny_sd_backbone, settings=replace(settings, same_seed=True))
    assert torch.equal(same.images[0], same.images[1]) and not torch.equal(apart[0], apart[1])
    assert same.seeds == [100, 100] and torch.equal(same.images[0], apart[0])


def test_feature_files_of_the_network_at_another_size_are_refused(published, tmp_path):
    model, _ = published
    extractor = load_extractor(SIZED)
    for spec in (SIZED, "tiny_nets:tiny_cnn@conv2"):
        save_file({"features": torch.randn(1, 4, 12, 12)}, tmp_path / "f.safetensors", {"extractor": spec})
        if spec == SIZED:
            assert read_inputs(model, extractor, [tmp_path / "f.safetensors"]).features.shape == (1, 4, 12, 12)
        else:
            with pytest.raises(FeatscopeError, match="trained on tiny_nets:tiny_cnn@conv2@24px"):
                read_inputs(model, extractor, [tmp_path / "f.safetensors"])
