"""SD 2.x, SDXL (and Turbo), SD3 and Flux backbones: tiny pipelines saved as real diffusers folders, loaded
through load_backbone, decoded with guidance, optimised end to end and inverted."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from huggingface_hub import constants

import featscope
from featscope import featinv
from featscope.backbones import load_backbone
from featscope.backbones.flow import FluxBackbone, SD3Backbone
from featscope.backbones.sdxl import SDXLBackbone
from featscope.devices import generators_for
from featscope.errors import FeatscopeError, InputFileError, SpecError
from featscope.inversion import null_text_invert, regenerate
from featscope.objectives import neuron
from featscope.solvers.configs import EndToEndConfig
from featscope.solvers.endtoend import optimize
from test_backbones import offline_empty_cache, one_line_error  # noqa: F401 (a fixture)
from tiny_families import (
    save_sd2_single_file,
    save_sdxl_single_file,
    save_tiny_flux,
    save_tiny_sd2,
    save_tiny_sd3,
    save_tiny_sdxl,
)
from tiny_sd import save_single_file

EXTRACTOR = "tiny_nets:tiny_cnn"
FAST = {"num_steps": 8, "recurrence": 2, "guidance_weight": 4.0}
FAMILIES = ["sd2", "sdxl", "turbo", "sd3", "flux"]
SPECS = {"sd2": "sd", "sdxl": "sdxl", "turbo": "sdxl", "sd3": "sd3", "flux": "flux"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {
        "sd2": save_tiny_sd2(root / "sd2"),
        "sdxl": save_tiny_sdxl(root / "sdxl"),
        "turbo": save_tiny_sdxl(root / "turbo", turbo=True),
        "sd3": save_tiny_sd3(root / "sd3"),
        "flux": save_tiny_flux(root / "flux"),
    }


@pytest.fixture(scope="module")
def backbones(folders):
    """Each family loaded once through its spec; Flux at 16 px (its pipeline default is 1024 px)."""
    loaded = {name: load_backbone(f"{SPECS[name]}:{folder}") for name, folder in folders.items()}
    loaded["flux"].at_size(16, 16)
    return loaded


@pytest.fixture(scope="module")
def tiny_cnn():
    return featscope.load_extractor(EXTRACTOR)


def test_each_family_loads_as_its_kind(backbones, folders):
    kinds = {"sd2": type(backbones["sd2"]), "sdxl": SDXLBackbone, "turbo": SDXLBackbone}
    kinds.update(sd3=SD3Backbone, flux=FluxBackbone)
    for name, backbone in backbones.items():
        assert type(backbone) is kinds[name] and backbone.spec == f"{SPECS[name]}:{folders[name]}"
        assert backbone.latent_shape == (4, 8, 8) and backbone.image_size == (16, 16) and backbone.has_prompts
    assert backbones["sd2"].prediction_type == "v_prediction"
    assert backbones["turbo"].make_scheduler("ddim", 1).timesteps.tolist() == [999]  # trailing: one step from T
    assert backbones["sdxl"].make_scheduler("ddim", 1).timesteps.tolist() == [1]  # leading, steps_offset 1


def test_sdxl_vae_stays_fp32_in_fp16_where_its_config_says_force_upcast(folders):
    backbone = load_backbone(f"sdxl:{folders['sdxl']}", dtype=torch.float16)
    assert backbone.dtype == torch.float16 and backbone.vae.dtype == torch.float32


def test_prompt_embeddings_are_the_pipelines(backbones, folders):
    prompts = ["a red cat", "dog"]
    sdxl = StableDiffusionXLPipeline.from_pretrained(folders["sdxl"])
    seq, _, pooled, _ = sdxl.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    cond = backbones["sdxl"].encode_prompt(prompts)
    torch.testing.assert_close(cond[:, :-2], seq, rtol=0, atol=1e-5)
    torch.testing.assert_close(cond[:, -2, :16], pooled, rtol=0, atol=1e-5)
    assert cond[:, -1, :6].tolist() == [[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * 2  # time ids: sizes, crop
    assert not backbones["sdxl"].encode_prompt([""])[:, :-1].any()  # force_zeros_for_empty_prompt
    sd3 = StableDiffusion3Pipeline.from_pretrained(folders["sd3"], text_encoder_3=None, tokenizer_3=None)
    seq, _, pooled, _ = sd3.encode_prompt(prompts, None, None, device="cpu", do_classifier_free_guidance=False)
    cond = backbones["sd3"].encode_prompt(prompts)
    torch.testing.assert_close(cond[:, :-1], seq, rtol=0, atol=1e-5)
    torch.testing.assert_close(cond[:, -1], pooled, rtol=0, atol=1e-5)
    seq, pooled, _ = FluxPipeline.from_pretrained(folders["flux"]).encode_prompt(prompts, None, device="cpu")
    cond = backbones["flux"].encode_prompt(prompts)
    torch.testing.assert_close(cond[:, :-1], seq, rtol=0, atol=1e-4)
    torch.testing.assert_close(cond[:, -1, :16], pooled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_ddim_on_the_vp_view_is_the_flow_euler_step(backbones, name):
    backbone = backbones[name]
    scheduler = backbone.make_scheduler("ddim", 4)
    t, t_prev = (int(x) for x in scheduler.timesteps[1:3])
    s, s_prev = backbone.sigmas[t], backbone.sigmas[t_prev]
    cond = backbone.encode_prompt(["red cat"])
    x_s = torch.randn(1, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    z = x_s / ((1 - s) ** 2 + s**2).sqrt()
    v = backbone.velocity(x_s, s.view(1), cond)
    eps = backbone.eps(z, t, cond)
    torch.testing.assert_close(backbone.x0_from_eps(z, t, eps), x_s - s * v, rtol=0, atol=1e-4)
    z_prev = scheduler.step(eps, t, z).prev_sample
    ancestral = backbone.make_scheduler("ddpm", 4).step(eps, t, z, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(ancestral.prev_sample).all()
    torch.testing.assert_close(
        z_prev * ((1 - s_prev) ** 2 + s_prev**2).sqrt(), x_s + (s_prev - s) * v, atol=1e-4, rtol=0
    )


def test_sd2_single_file_with_its_config_keeps_v_prediction(backbones, folders, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(folders["sd2"], safety_checker=None)
    path = save_sd2_single_file(pipe, tmp_path / "sd2-tiny.safetensors")  # OpenCLIP text keys, as SD 2.x files
    backbone = load_backbone(f"sd:{path}", config=folders["sd2"])
    assert backbone.prediction_type == "v_prediction"
    z, cond = torch.randn(1, 4, 8, 8), backbone.encode_prompt(["red cat"])
    torch.testing.assert_close(cond, backbones["sd2"].encode_prompt(["red cat"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(backbone.eps(z, 600, cond), backbones["sd2"].eps(z, 600, cond), rtol=0, atol=1e-5)


def test_sdxl_single_file_with_its_config_is_the_folders_model(backbones, folders, tmp_path):
    pipe = StableDiffusionXLPipeline.from_pretrained(folders["sdxl"])
    path = save_sdxl_single_file(pipe, tmp_path / "sdxl-tiny.safetensors")  # Stability's key layout
    backbone = load_backbone(f"sdxl:{path}", config=folders["sdxl"])
    assert type(backbone) is SDXLBackbone and backbone.image_size == (16, 16)
    z, cond = torch.randn(1, 4, 8, 8), backbone.encode_prompt(["red cat"])
    torch.testing.assert_close(cond, backbones["sdxl"].encode_prompt(["red cat"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(backbone.eps(z, 600, cond), backbones["sdxl"].eps(z, 600, cond), rtol=0, atol=1e-5)
    image = backbone.decode(z)
    torch.testing.assert_close(image, backbones["sdxl"].decode(z), rtol=0, atol=1e-5)


def test_sdxl_single_file_errors_are_one_line(folders, tiny_sd_folder, tmp_path, offline_empty_cache):  # noqa: F811
    pipe = StableDiffusionXLPipeline.from_pretrained(folders["sdxl"])
    path = save_sdxl_single_file(pipe, tmp_path / "sdxl-tiny.safetensors")
    with pytest.raises(FeatscopeError) as excinfo:  # a 1-layer text encoder: diffusers cannot tell it is SDXL
        load_backbone(f"sdxl:{path}")
    assert "--backbone-config" in one_line_error(excinfo)
    sd_file = save_single_file(StableDiffusionPipeline.from_pretrained(tiny_sd_folder), tmp_path / "sd.safetensors")
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sdxl:{sd_file}")
    assert "not an SDXL checkpoint" in one_line_error(excinfo)
    with pytest.raises(SpecError) as excinfo:
        load_backbone(f"sdxl:{folders['sdxl']}", config=folders["sdxl"])
    assert "only applies to single-file checkpoints" in one_line_error(excinfo)


@pytest.mark.parametrize("name", FAMILIES)
def test_guided_distance_is_at_most_half_the_unguided(backbones, name, target_png):
    guided = featscope.decode(target_png, backbone=backbones[name], extractor=EXTRACTOR, quiet=True, **FAST)
    unguided = featscope.decode(
        target_png, backbone=backbones[name], extractor=EXTRACTOR, quiet=True, **{**FAST, "guidance_weight": 0.0}
    )
    g, u = guided.metrics[0]["best_distance"], unguided.metrics[0]["best_distance"]
    assert g <= 0.5 * u, (g, u)


@pytest.mark.parametrize("name", FAMILIES)
def test_one_end_to_end_step_lowers_the_loss(backbones, name, tiny_cnn):
    config = EndToEndConfig(num_steps=3, iterations=1, cutouts=2)
    result = optimize(
        backbones[name], neuron(tiny_cnn, "conv2", 0), prompt="red cat", generators=generators_for([0], CPU),
        config=config, quiet=True,
    )  # fmt: skip
    assert result.losses.shape == (2, 1) and (result.losses[1] < result.losses[0]).all()
    assert result.cond_delta.shape[-2:] == backbones[name].encode_prompt(["x"]).shape[-2:]


@pytest.mark.parametrize("name", ["sdxl", "sd3", "flux"])
def test_null_text_inversion_runs_and_regenerates(backbones, name):
    backbone = backbones[name]
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x_t, null_texts = null_text_invert(backbone, image, "red cat", num_steps=3, inner_steps=2, quiet=True)
    assert x_t.shape == (1, 4, 8, 8) and null_texts.shape[:2] == (3, 1)
    z0 = regenerate(backbone, x_t, "red cat", null_texts)
    assert torch.isfinite(backbone.decode(z0)).all()


# -- one-line errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_uncached_hub_id_offline_is_a_one_line_error(family, offline_empty_cache):  # noqa: F811
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"{family}:made-up-org/no-such-model")
    message = one_line_error(excinfo)
    assert "made-up-org/no-such-model" in message and "not in the local Hugging Face cache" in message
    assert f"{family}:/path/to/diffusers/folder" in message


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_missing_folder_and_single_file_are_one_line_errors(family, tmp_path):
    with pytest.raises(InputFileError) as excinfo:
        load_backbone(f"{family}:{tmp_path / 'missing'}")
    assert "does not exist" in one_line_error(excinfo)
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"")
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"{family}:{single}")
    if family == "sdxl":  # read as an original SDXL checkpoint
        assert "sdxl: expects an SDXL" in one_line_error(excinfo)
    else:
        assert "from_single_file" in one_line_error(excinfo) and isinstance(excinfo.value, InputFileError)


@pytest.mark.parametrize(
    ("spec", "folder", "found"),
    [("sdxl", "sd", "sd"), ("sd3", "flux", "flux"), ("flux", "sdxl", "sdxl"), ("sd", "sdxl", "sdxl")],
)
def test_a_folder_of_another_family_names_the_right_spec(spec, folder, found, folders, tiny_sd_folder):
    path = tiny_sd_folder if folder == "sd" else folders[folder]
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"{spec}:{path}")
    assert f"load it as {found}:{path}" in one_line_error(excinfo)


def test_a_cached_hub_model_of_another_family_names_the_right_spec(folders, offline_empty_cache):  # noqa: F811
    repo, revision = Path(constants.HF_HUB_CACHE) / "models--made-up-org--tiny-sdxl", "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    shutil.copy(folders["sdxl"] / "model_index.json", repo / "snapshots" / revision)
    for spec in ("sd", "flux"):
        with pytest.raises(FeatscopeError) as excinfo:
            load_backbone(f"{spec}:made-up-org/tiny-sdxl")
        assert "load it as sdxl:made-up-org/tiny-sdxl" in one_line_error(excinfo)


def test_featinv_builds_on_sd2(backbones):
    model = featinv.build(backbones["sd2"], f"{EXTRACTOR}@conv2")
    assert model.config.backbone == backbones["sd2"].spec


@pytest.fixture(scope="module")
def sdxl_featinv(backbones, tmp_path_factory) -> Path:
    """A FeatInv model on the tiny SDXL, trained 30 steps on 16 world images."""
    out = tmp_path_factory.mktemp("featinv-sdxl") / "run"
    model = featinv.build(backbones["sdxl"], f"{EXTRACTOR}@conv2", adapter_width=16)
    config = featinv.TrainConfig(steps=30, batch_size=8, lr=1e-2, sample_every=0, checkpoint_every=1000)
    featinv.train(model, out, world=16, config=config, backbone=backbones["sdxl"], device="cpu", quiet=True)
    return out


def test_featinv_on_sdxl_copies_the_added_conditioning_and_training_lowers_the_loss(backbones, sdxl_featinv):
    controlnet = featinv.build(backbones["sdxl"], f"{EXTRACTOR}@conv2", adapter_width=16).controlnet
    assert controlnet.config.addition_embed_type == "text_time"  # pooled text and time ids, as the UNet
    assert torch.equal(controlnet.add_embedding.linear_1.weight, backbones["sdxl"].unet.add_embedding.linear_1.weight)
    trained = featinv.load_model(sdxl_featinv / "model").controlnet
    assert trained.config.addition_embed_type == "text_time" and trained.config.cross_attention_dim == 40
    loss = [json.loads(line)["loss"] for line in (sdxl_featinv / "log.jsonl").read_text().splitlines()]
    assert len(loss) == 30 and np.mean(loss[-10:]) < 0.85 * np.mean(loss[:10])


def test_featinv_reconstructs_on_sdxl_and_feeds_it_the_pooled_embedding(backbones, sdxl_featinv):
    backbone, model = backbones["sdxl"], featinv.load_model(sdxl_featinv / "model")
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    features = featinv.encode(model, images)
    settings = featinv.SampleSettings(num_steps=3, seed=7)
    out = featinv.reconstruct(model, features, backbone=backbone, settings=settings).images
    again = featinv.reconstruct(model, features, backbone=backbone, settings=settings).images
    assert out.shape == (2, 3, 16, 16) and torch.equal(out, again)
    free = featinv.reconstruct(model, features, backbone=backbone, settings=replace(settings, conditioning_scale=0.0))
    assert not torch.allclose(out, free.images, atol=1e-4)  # the trained ControlNet steers the SDXL UNet
    cond = backbone.encode_prompt(["red cat"])
    other = cond.clone()
    other[:, -2] = 0  # the pooled embedding row
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([500])
    _, mid = model(z, t, *_split(backbone, cond, features[:1]))
    _, mid_other = model(z, t, *_split(backbone, other, features[:1]))
    assert not torch.allclose(mid, mid_other, atol=1e-6)


def _split(backbone, cond: torch.Tensor, features: torch.Tensor) -> tuple:
    """FeatInvModel's text, features, scale and added conditioning for the packed SDXL ``cond``."""
    kwargs = backbone.unet_kwargs(cond)
    return kwargs["encoder_hidden_states"], features, 1.0, kwargs["added_cond_kwargs"]
