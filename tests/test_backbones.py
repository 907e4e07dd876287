"""load_backbone: tiny random-weight models saved in real formats, loaded back through the spec strings."""

from __future__ import annotations

import sys

import pytest
import torch
from diffusers import StableDiffusionPipeline
from huggingface_hub import constants
from safetensors.torch import save_file

from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError, InputFileError, SpecError
from featscope.world import loaders
from featscope.world.text import WorldTextEncoder


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """The hub offline, with an empty cache (whatever this machine has cached)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


# -- Stable Diffusion -----------------------------------------------------------------------------
def test_sd_folder_is_a_latent_backbone(tiny_sd_backbone, tiny_sd_folder):
    backbone = tiny_sd_backbone
    assert backbone.is_latent and backbone.has_prompts
    assert backbone.latent_shape == (4, 8, 8) and backbone.image_size == (16, 16)
    assert backbone.vae_scale == pytest.approx(0.18215)
    assert backbone.spec == f"sd:{tiny_sd_folder}"
    prompts = ["a red cat", "dog"]
    cond = backbone.encode_prompt(prompts)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_folder, safety_checker=None)
    expected, _ = pipe.encode_prompt(prompts, "cpu", 1, do_classifier_free_guidance=False)
    torch.testing.assert_close(cond, expected, rtol=0, atol=1e-6)  # the prompt embedding SD itself uses
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert backbone.eps(z, 500, cond).shape == z.shape
    assert backbone.decode(z).shape == (2, 3, 16, 16)
    assert backbone.encode(backbone.decode(z)).shape == z.shape


@pytest.mark.parametrize("kind", ["tiny_sd_single_file", "tiny_sd_ckpt"])
def test_single_file_checkpoint_matches_the_folder(kind, request, tiny_sd_backbone, tiny_sd_folder):
    path = request.getfixturevalue(kind)
    backbone = load_backbone(f"sd:{path}", config=tiny_sd_folder)
    assert "pytorch_lightning" not in sys.modules  # the .ckpt's Lightning objects were never imported
    for name in ("unet", "vae"):
        ours, theirs = getattr(backbone, name).state_dict(), getattr(tiny_sd_backbone, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    cond = backbone.encode_prompt(["red cat", "a dog"])
    torch.testing.assert_close(cond, tiny_sd_backbone.encode_prompt(["red cat", "a dog"]), rtol=0, atol=1e-5)
    for t in (10, 900):
        torch.testing.assert_close(backbone.eps(z, t, cond), tiny_sd_backbone.eps(z, t, cond), rtol=0, atol=1e-5)
    torch.testing.assert_close(backbone.decode(z), tiny_sd_backbone.decode(z), rtol=0, atol=1e-5)
    assert backbone.scheduler_config["beta_schedule"] == "scaled_linear"


def test_single_file_without_config_needs_the_cached_sd_config(tiny_sd_single_file, offline_empty_cache):
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sd:{tiny_sd_single_file}")
    message = one_line_error(excinfo)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "not in the local Hugging Face cache" in message
    assert "--backbone-config" in message


def test_uncached_hub_id_offline_is_a_one_line_error(offline_empty_cache):
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone("sd:made-up-org/no-such-diffusion-model")
    message = one_line_error(excinfo)
    assert "made-up-org/no-such-diffusion-model" in message and "not in the local Hugging Face cache" in message
    assert "network" in message and "local folder" in message


def test_sd_dtype(tiny_sd_folder):
    backbone = load_backbone(f"sd:{tiny_sd_folder}", dtype=torch.bfloat16)
    assert backbone.dtype == torch.bfloat16 and backbone.vae.dtype == torch.bfloat16
    assert backbone.prompt_encoder.text_encoder.dtype == torch.bfloat16
    assert backbone.alphas_cumprod.dtype == torch.float32


# -- pixel space ----------------------------------------------------------------------------------
def test_unconditional_pixel_folder(tiny_pixel_folder):
    assert (tiny_pixel_folder / "model_index.json").is_file()  # DDPMPipeline's layout
    backbone = load_backbone(f"pixel:{tiny_pixel_folder}")
    assert not backbone.is_latent and not backbone.has_prompts and backbone.encode_prompt(["x"]) is None
    assert backbone.latent_shape == (3, 16, 16) and backbone.image_size == (16, 16)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    z = backbone.encode(images)
    assert z.min() >= -1 and z.max() <= 1
    torch.testing.assert_close(backbone.decode(z), images)
    assert backbone.eps(z, torch.tensor([3, 700]), None).shape == z.shape


def test_pixel_schedulers_have_the_right_timesteps(tiny_pixel_folder):
    backbone = load_backbone(f"pixel:{tiny_pixel_folder}")
    ddpm = backbone.make_scheduler("ddpm", 1000)
    assert ddpm.timesteps.tolist() == list(range(999, -1, -1))
    ddim = backbone.make_scheduler("ddim", 20)
    assert ddim.timesteps.tolist() == list(range(950, -1, -50))
    assert backbone.num_train_timesteps == 1000 and backbone.prediction_type == "epsilon"


def test_caption_conditioned_pixel_folder(tiny_pixel_text_backbone, tiny_pixel_text_folder):
    backbone = tiny_pixel_text_backbone
    assert backbone.has_prompts and not backbone.is_latent
    captions = ["red circle", "small blue star on dark"]
    cond = backbone.encode_prompt(captions)
    expected = WorldTextEncoder.load(tiny_pixel_text_folder / "text_encoder").encode(captions)
    torch.testing.assert_close(cond, expected)
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    eps = backbone.eps(z, 250, cond)
    assert eps.shape == z.shape and not torch.allclose(eps, backbone.eps(z, 250, cond.flip(0)))


def test_pixel_dtype(tiny_pixel_text_folder):
    backbone = load_backbone(f"pixel:{tiny_pixel_text_folder}", dtype=torch.bfloat16)
    assert backbone.dtype == torch.bfloat16
    z = torch.randn(1, 3, 16, 16)
    assert backbone.eps(z, 5, backbone.encode_prompt(["red circle"])).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["sd", "pixel"])
def test_cuda_half_precision(family, tiny_sd_folder, tiny_pixel_text_folder):
    folder = tiny_sd_folder if family == "sd" else tiny_pixel_text_folder
    backbone = load_backbone(f"{family}:{folder}", device="cuda", dtype=torch.float16)
    assert backbone.device.type == "cuda" and backbone.dtype == torch.float16
    cond = backbone.encode_prompt(["red circle"])
    assert cond.device.type == "cuda"
    z = torch.randn(1, *backbone.latent_shape, device="cuda")
    assert torch.isfinite(backbone.decode(backbone.x0_from_eps(z, 500, backbone.eps(z, 500, cond)))).all()


# -- the embedded world model ---------------------------------------------------------------------
def test_world_ddpm_loads_or_says_how_to_get_it():
    if (loaders.world_folder("ddpm") / "unet" / "config.json").is_file():
        backbone = load_backbone("world:ddpm")
        assert backbone.has_prompts and backbone.image_size == (32, 32)
    else:
        with pytest.raises(FeatscopeError) as excinfo:
            load_backbone("world:ddpm")
        assert "featscope world train ddpm" in one_line_error(excinfo)


def test_corrupt_world_weights_say_reinstall_or_retrain(monkeypatch, tmp_path, tiny_pixel_text_folder):
    import shutil

    broken = tmp_path / "ddpm"
    shutil.copytree(tiny_pixel_text_folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setattr(loaders, "world_folder", lambda name: tmp_path / name)
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone("world:ddpm")
    message = one_line_error(excinfo)
    assert "reinstall featscope" in message and "featscope world train ddpm" in message


# -- user mistakes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        ("sdd:CompVis/stable-diffusion-v1-4", SpecError, "did you mean sd:"),
        ("CompVis/stable-diffusion-v1-4", SpecError, "sd:HUB_ID"),
        ("pixel:", SpecError, "names no model"),
        ("world:ddmp", SpecError, "world:ddpm"),
        ("pixel:/no/such/folder", InputFileError, "/no/such/folder"),
        ("sd:/no/such/sd-v1-4.ckpt", InputFileError, "does not exist"),
        ("sd:./no-such-folder", InputFileError, "does not exist"),
    ],
)
def test_bad_specs(spec, error, needle):
    with pytest.raises(error) as excinfo:
        load_backbone(spec)
    assert needle in one_line_error(excinfo)


def test_config_only_for_sd_files(tiny_pixel_folder, tiny_sd_folder):
    with pytest.raises(SpecError):
        load_backbone(f"pixel:{tiny_pixel_folder}", config=tiny_sd_folder)
    with pytest.raises(SpecError):
        load_backbone(f"sd:{tiny_sd_folder}", config=tiny_sd_folder)


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(InputFileError) as excinfo:
        load_backbone(f"pixel:{tmp_path}")
    assert "unet/config.json" in one_line_error(excinfo)
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sd:{tmp_path}")
    assert "diffusers folder" in one_line_error(excinfo)


def _truncated(path, tmp_path):
    out = tmp_path / f"truncated{path.suffix}"
    out.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return out


@pytest.mark.parametrize(
    "name",
    ["notes.ckpt", "notes.safetensors", "random.safetensors", "random.ckpt", "truncated.safetensors", "truncated.ckpt"],
)
def test_files_that_are_not_diffusion_checkpoints(name, tmp_path, tiny_sd_single_file, tiny_sd_ckpt, tiny_sd_folder):
    path = tmp_path / name
    tensors = {"weight": torch.randn(4, 4), "bias": torch.randn(4)}
    if name.startswith("notes"):
        path.write_text("not a checkpoint\n")
    elif name == "random.safetensors":
        save_file(tensors, str(path))
    elif name == "random.ckpt":
        torch.save({"state_dict": tensors}, path)
    else:
        path = _truncated(tiny_sd_single_file if name.endswith(".safetensors") else tiny_sd_ckpt, tmp_path)
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sd:{path}", config=tiny_sd_folder)
    assert str(path) in one_line_error(excinfo)
