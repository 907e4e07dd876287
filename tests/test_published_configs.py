"""Each backbone family with its *published* scheduler and VAE configs (SD 1.4: PNDM, leading spacing,
steps_offset 1; SD 2.1: v-prediction; SD 2.x zero terminal SNR; SDXL base and Turbo; SD3; Flux), as diffusers
tests its pipelines: every decode preset runs its first and last steps, sampling equals the diffusers pipeline,
results stay finite, fp16 autocast keeps guidance. One test per defect of the Stable Diffusion path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

import featscope
from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError
from featscope.extractors.base import Extractor
from featscope.inversion import ddim_schedule
from featscope.investigate.masks import cross_attention_map, word_tokens
from featscope.investigate.wordswap import token_mapper, word_swap_core
from featscope.objectives import Objective, feature_match
from featscope.sampling import sample
from featscope.solvers.configs import PRESETS, UniversalConfig, WordSwapConfig
from featscope.solvers.universal import _GuidedSampling, _Stepper, solve_universal
from test_backbones import one_line_error
from tiny_families import save_tiny_flux, save_tiny_sd2, save_tiny_sd3, save_tiny_sdxl
from tiny_nets import tiny_cnn

FAMILIES = ["sd14", "sd21v", "zero_snr", "sdxl", "turbo", "sd3", "flux"]
SPEC = {"sd14": "sd", "sd21v": "sd", "zero_snr": "sd", "sdxl": "sdxl", "turbo": "sdxl", "sd3": "sd3", "flux": "flux"}


def _set_scheduler(folder: Path, **fields) -> Path:
    """Rewrite fields of a saved pipeline's scheduler config (as a published model folder carries them)."""
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd_folder):
    root = tmp_path_factory.mktemp("published")
    zero_snr = shutil.copytree(save_tiny_sd2(root / "sd21v"), root / "zero_snr")
    _set_scheduler(zero_snr, rescale_betas_zero_snr=True, timestep_spacing="trailing")  # SD 2.x zero-SNR fine-tunes
    sd14 = _set_scheduler(shutil.copytree(tiny_sd_folder, root / "sd14"), clip_sample=False)
    return {
        "sd14": sd14,  # SD 1.4's own scheduler config: PNDM, leading spacing, steps_offset 1, clip_sample false
        "sd21v": root / "sd21v",  # SD 2.1: DDIM, v-prediction, leading spacing, steps_offset 1
        "zero_snr": zero_snr,
        "sdxl": save_tiny_sdxl(root / "sdxl"),  # Euler, leading spacing, steps_offset 1
        "turbo": save_tiny_sdxl(root / "turbo", turbo=True),  # Euler ancestral, trailing spacing
        "sd3": save_tiny_sd3(root / "sd3"),
        "flux": save_tiny_flux(root / "flux"),
    }


@pytest.fixture(scope="module")
def backbones(folders):
    loaded = {name: load_backbone(f"{SPEC[name]}:{folder}") for name, folder in folders.items()}
    loaded["flux"].at_size(16, 16)
    return loaded


def brightness() -> Objective:
    return Objective(lambda ctx: ctx.images.float().square().flatten(1).mean(1), "brightness")


# -- defect 1: SD's leading spacing with steps_offset 1 at 1000 steps ------------------------------------
def test_sd14_scheduler_at_1000_steps_visits_999_to_0_and_keeps_its_offset_below(backbones):
    backbone = backbones["sd14"]
    assert backbone.scheduler_config["steps_offset"] == 1 and backbone.scheduler_config["timestep_spacing"] == "leading"
    for kind in ("ddpm", "ddim"):
        timesteps = backbone.make_scheduler(kind, 1000).timesteps.tolist()
        assert timesteps == list(range(999, -1, -1))  # the published decoder's loop
        assert backbone.make_scheduler(kind, 50).timesteps.tolist()[:2] == [981, 961]  # diffusers' own, offset kept


def _first_and_last_steps(backbone, config: UniversalConfig) -> list[torch.Tensor]:
    """The solver's own iteration and step at its first and last sampling step (K = 1 there): the states it
    reaches. The 998 steps between are the same code at other timesteps."""
    run = _GuidedSampling(backbone, brightness(), config, [torch.Generator().manual_seed(0)], torch.float32)
    stepper = _Stepper(backbone, config)
    last_index = len(stepper.timesteps) - 1
    assert 0 <= min(stepper.timesteps) and max(stepper.timesteps) < backbone.num_train_timesteps
    z = torch.randn(1, *backbone.latent_shape, generator=torch.Generator().manual_seed(1))
    reached = []
    for i in (0, last_index):
        t = stepper.timesteps[i]
        abar_t = backbone.alphas_cumprod[t]
        step = run.iterate(z, i, t, 0, abar_t)
        z_next = stepper.step(step, t, z, abar_t, stepper.landing(i), run.row_generators, None, True)
        assert torch.isfinite(step.loss).all() and torch.isfinite(step.x0).all()
        reached.append(z_next)
    assert run.best.images is not None and torch.isfinite(run.best.images).all()
    return reached


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("name", FAMILIES)
def test_every_preset_runs_its_first_and_last_steps(backbones, name, preset):
    for z in _first_and_last_steps(backbones[name], PRESETS[preset]):
        assert torch.isfinite(z).all()


def test_reference_decodes_an_sd14_folder_from_the_cli(featscope_main, folders, target_png, tmp_path):
    """The README's first example on SD 1.4's scheduler config: the 1000-step chain starts (at t = 999) and
    writes its run; K 1 in the first step and ``--stop-distance`` end it after one iteration, to stay short."""
    out = tmp_path / "ref"
    short = ["--early-recurrence", "1", "--stop-distance", "1e30"]
    result = featscope_main("decode", "--target", str(target_png), "--backbone", f"sd:{folders['sd14']}",
                            "--extractor", "tiny_nets:tiny_cnn", "--preset", "reference", *short, "--out", str(out),
                            "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    assert first["timestep"] == 999 and first["K"] == 1
    assert json.loads((out / "metrics.json").read_text())["samples"][0]["best_distance"] < float("inf")


# -- sampling equals the diffusers pipelines --------------------------------------------------------
@pytest.mark.parametrize(("name", "atol"), [("sd14", 1e-5), ("sd21v", 1e-5), ("zero_snr", 2e-3), ("sdxl", 1e-5)])
def test_ddim_sampling_equals_the_diffusers_pipeline(backbones, folders, name, atol):
    """featscope's DDIM equals the family's pipeline with a DDIM scheduler made from the folder's own config (the
    zero-SNR model within the step its abar floor makes: diffusers' DDIM takes abar = 0 there, exactly)."""
    backbone, steps = backbones[name], 4
    generator = torch.Generator().manual_seed(3)
    ours = sample(backbone, [generator], prompts=["red cat"], num_steps=steps)
    latents = torch.randn(1, *backbone.latent_shape, generator=torch.Generator().manual_seed(3))
    pipeline = StableDiffusionXLPipeline if SPEC[name] == "sdxl" else StableDiffusionPipeline
    extra = {"safety_checker": None} if pipeline is StableDiffusionPipeline else {}
    pipe = pipeline.from_pretrained(folders[name], **extra)
    published = {"clip_sample": False, "set_alpha_to_one": False}  # as the published SD and SDXL configs say
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **published)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe("red cat", num_inference_steps=steps, guidance_scale=1.0, latents=latents, output_type="pt").images
    torch.testing.assert_close(ours, theirs.clamp(0, 1), atol=atol, rtol=0)


# -- defect 2: zero terminal SNR ----------------------------------------------------------------------
def test_zero_snr_v_prediction_has_a_finite_x0_equal_to_diffusers_v_form(backbones):
    backbone = backbones["zero_snr"]
    assert float(DDIMScheduler.from_config(backbone.scheduler_config).alphas_cumprod[-1]) == 0.0
    t = int(backbone.make_scheduler("ddim", 10).timesteps[0])
    assert t == 999
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = backbone.encode_prompt(["", ""])
    v = backbone.unet(z, torch.tensor([t, t]), encoder_hidden_states=cond).sample
    a = backbone.alphas_cumprod[t]
    x0 = backbone.x0_from_eps(z, t, backbone.eps(z, t, cond))
    assert torch.isfinite(x0).all()
    torch.testing.assert_close(x0, a.sqrt() * z - (1 - a).sqrt() * v, atol=2e-3, rtol=0)  # diffusers: -v at abar 0


def test_zero_snr_decode_is_finite_and_guided(backbones, target_png):
    backbone = backbones["zero_snr"]
    settings = {"num_steps": 6, "recurrence": 2, "guidance_weight": 1.0, "quiet": True}
    guided = featscope.decode(target_png, backbone=backbone, extractor="tiny_nets:tiny_cnn", **settings)
    unguided = featscope.decode(target_png, backbone=backbone, extractor="tiny_nets:tiny_cnn",
                                **{**settings, "guidance_weight": 0.0})  # fmt: skip
    g, u = guided.metrics[0]["best_distance"], unguided.metrics[0]["best_distance"]
    assert torch.isfinite(guided.best).all() and g < 0.5 * u, (g, u)


# -- defect 3: SDXL's VAE in fp16 ----------------------------------------------------------------------
def test_fp16_autocast_keeps_guidance_through_sdxls_overflowing_vae(backbones):
    """SDXL's VAE overflows in fp16; here the tiny VAE's first decoder layer is scaled so that its activations
    pass fp16's range (65504) before the next normalisation. Under fp16 autocast the decode must run upcast,
    outside autocast, as the SDXL pipeline decodes: every step keeps its guidance and the result is finite."""
    backbone = backbones["sdxl"]
    assert backbone.vae.config.force_upcast and backbone.vae_upcast
    conv = backbone.vae.decoder.conv_in
    original = conv.weight.detach().clone(), conv.bias.detach().clone()
    skipped = []
    try:
        with torch.no_grad():
            conv.weight.mul_(1e6)
            conv.bias.mul_(1e6)
        z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        with torch.autocast("cpu", dtype=torch.float16), torch.autocast("cpu", enabled=False):
            assert torch.isinf(conv(backbone.vae.post_quant_conv(z / backbone.vae_scale)).half()).any()
        config = UniversalConfig(num_steps=3, recurrence=1, early_recurrence=1, guidance_weight=1.0)
        out = solve_universal(
            backbone,
            brightness(),
            config,
            generators=[torch.Generator().manual_seed(0)],
            dtype=torch.float16,
            log=lambda r: skipped.append(r.get("skipped", 0)),
            quiet=True,
        )
    finally:
        with torch.no_grad():
            conv.weight.copy_(original[0])
            conv.bias.copy_(original[1])
    assert skipped and sum(skipped) == 0 and torch.isfinite(out.best).all()


# -- defect 4: SD 2.x single files ----------------------------------------------------------------------
def test_an_sd2_single_file_without_config_is_refused_rather_than_guessed(tmp_path):
    """diffusers classifies every SD 2.x file as the 768 px v-prediction model; the 512 px epsilon models have
    the same keys. The check reads only the keys: SD 2.x's UNet attends to 1024-wide OpenCLIP-H text states."""
    path = tmp_path / "sd21-base.safetensors"
    state = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1, 4, 1, 1),
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(1, 1024),
    }
    save_file(state, str(path))
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sd:{path}")
    message = one_line_error(excinfo)
    assert "Stable Diffusion 2.x" in message and "--backbone-config" in message and "2-1-base" in message


# -- defect 5: word swap's token mapper, and word swap on SDXL, SD3, Flux ------------------------------------
@pytest.mark.parametrize(("source", "edited", "word", "new"), [
    ("a cat on dog", "a bird on dog", "cat", "bird"),  # 1 token -> 4 tokens
    ("a bird on dog", "a cat on dog", "bird", "cat"),  # 4 -> 1
    ("a red on dog", "a bed on dog", "red", "bed"),  # 2 -> 2 ("re" "d</w>" -> "b" "ed</w>")
])  # fmt: skip
def test_token_mapper_is_prompt_to_prompts(backbones, source, edited, word, new):
    backbone = backbones["sd14"]
    mapper = token_mapper(backbone, source, edited, word, new)
    torch.testing.assert_close(mapper.sum(1), torch.ones(len(mapper)))  # attention rows still sum to 1
    old, fresh = word_tokens(backbone, source, word), word_tokens(backbone, edited, new)
    block = mapper[old][:, fresh]
    if len(old) == len(fresh):
        assert torch.equal(block, torch.eye(len(old)))  # one to one
    else:
        assert torch.equal(block, torch.full_like(block, 1 / len(fresh)))  # each old token spread over the new
    assert mapper[0, 0] == mapper[1, 1] == 1 and mapper[old[-1] + 1, fresh[-1] + 1] == 1  # the rest in order


def test_word_swap_runs_on_sdxl_and_injects_its_attention(backbones):
    net = Extractor(tiny_cnn()[0], name="tiny")
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = WordSwapConfig(num_steps=2, inner_steps=1, taus=(0.0, 1.0))
    result = word_swap_core(backbones["sdxl"], net, image, 0, 1, prompts="a cat on dog", word="cat", new_word="bird",
                            config=config)  # fmt: skip
    assert result.edited_prompts == ["a bird on dog"]
    assert result.images.shape == (2, 1, 3, 16, 16) and torch.isfinite(result.images).all()
    assert float((result.images[1] - result.images[0]).abs().max()) > 1e-4  # re-injection changed the result


def test_cross_attention_masks_run_on_sdxl(backbones):
    backbone = backbones["sdxl"]
    x_t = torch.randn(1, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    soft = cross_attention_map(backbone, x_t, "a cat on dog", "cat", num_steps=4)
    assert soft.shape == (1, 1, 16, 16) and float(soft.min()) == 0.0 and float(soft.max()) == 1.0


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_word_swap_and_attention_masks_on_joint_attention_models_name_the_reason(backbones, name):
    with pytest.raises(FeatscopeError) as excinfo:
        word_tokens(backbones[name], "a cat on dog", "cat")
    message = one_line_error(excinfo)
    assert "attends to text and image jointly" in message and "sd: or sdxl:" in message


# -- defect 6: EDM-scheduled SDXL-architecture folders ---------------------------------------------------
@pytest.mark.parametrize("edit", ["scheduler", "vae"])
def test_an_edm_sdxl_folder_is_refused(folders, tmp_path, edit):
    folder = shutil.copytree(folders["sdxl"], tmp_path / "playground")
    if edit == "scheduler":
        _set_scheduler(folder, _class_name="EDMDPMSolverMultistepScheduler", sigma_data=0.5)
    else:
        path = folder / "vae" / "config.json"
        edm_latents = {"latents_mean": [0.0] * 4, "latents_std": [1.0] * 4}
        path.write_text(json.dumps(json.loads(path.read_text()) | edm_latents))
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sdxl:{folder}")
    assert "EDM noise schedule" in one_line_error(excinfo)


# -- defect 7: prediction types, DDIM's landing step ------------------------------------------------------
def test_sample_prediction_models_convert_their_x0_and_unknown_types_are_refused(folders, tmp_path):
    folder = _set_scheduler(shutil.copytree(folders["sd14"], tmp_path / "x0"), prediction_type="sample")
    backbone = load_backbone(f"sd:{folder}")
    z, cond = torch.randn(1, 4, 8, 8), backbone.encode_prompt([""])
    x0_predicted = backbone.unet(z, torch.tensor([600]), encoder_hidden_states=cond).sample
    torch.testing.assert_close(backbone.x0_from_eps(z, 600, backbone.eps(z, 600, cond)), x0_predicted)
    _set_scheduler(folder, prediction_type="flow")
    with pytest.raises(FeatscopeError) as excinfo:
        load_backbone(f"sd:{folder}")
    assert "unknown prediction_type 'flow'" in one_line_error(excinfo)


def test_self_recurrence_renoises_from_where_ddim_landed(backbones):
    """Trailing spacing with 30 steps: diffusers' DDIM steps to t - 1000 // 30, one index off the next listed
    timestep; self-recurrence and DDIM inversion both start from that level."""
    backbone = backbones["zero_snr"]
    config = UniversalConfig(num_steps=30)
    stepper = _Stepper(backbone, config)
    t, t_next = stepper.timesteps[1], stepper.timesteps[2]
    assert t - t_next == 34  # trailing spacing at 30 steps alternates 33 and 34
    torch.testing.assert_close(stepper.landing(1), backbone.alphas_cumprod[t - 33])
    z, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    landed = stepper.scheduler.step(eps, t, z).prev_sample
    a, a_prev = backbone.alphas_cumprod[t], stepper.landing(1)
    x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
    torch.testing.assert_close(landed, a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps)
    schedule = ddim_schedule(backbone, 30)
    torch.testing.assert_close(schedule.abar_prev[1], stepper.landing(1))


# -- defects 8-10: the reference preset as published ---------------------------------------------------------
def test_reference_does_not_clamp_what_the_network_sees(backbones):
    seen = []
    objective = Objective(lambda ctx: seen.append(ctx.images.detach()) or ctx.images.flatten(1).mean(1), "seen")
    run = _GuidedSampling(backbones["sd14"], objective, PRESETS["reference"], [torch.Generator()], torch.float32)
    run.loss_of(torch.full((1, 4, 8, 8), 40.0))  # a latent far outside the VAE's range
    assert float(seen[0].max()) > 1 or float(seen[0].min()) < 0
    assert PRESETS["fast"].clamp  # featscope's presets keep the clamp they were chosen with


def test_reference_takes_the_networks_published_clip_threshold(backbones):
    """ViT-H/14's published threshold is 2.0 (3.0 for CLIP RN50 and ResNet-50), through every entry point: the
    threshold belongs to the network the objective runs, not to a preset name."""
    from featscope.extractors import torchvision_nets

    published = torchvision_nets.GUIDANCE_CLIP["vit_h_14"]
    vit = Extractor(tiny_cnn()[0], name="torchvision:vit_h_14", guidance_clip=published)
    plain = Extractor(tiny_cnn()[0], name="plain")
    target = torch.zeros(1, 8)
    backbone, reference = backbones["sd14"], PRESETS["reference"]
    gens = [torch.Generator()]
    assert _GuidedSampling(backbone, feature_match(vit, target), reference, gens, torch.float32).grad_clip == 2.0
    assert _GuidedSampling(backbone, feature_match(plain, target), reference, gens, torch.float32).grad_clip == 3.0
    own = reference.with_overrides(grad_clip=1.5)
    assert _GuidedSampling(backbone, feature_match(vit, target), own, gens, torch.float32).grad_clip == 1.5


def test_the_network_input_resize_antialiases_as_torchvision_resize_does():
    net = Extractor(tiny_cnn()[0], name="tiny", input_size=(16, 16), mean=(0, 0, 0), std=(1, 1, 1))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    expected = TF.resize(images, [16, 16], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    torch.testing.assert_close(net.preprocess(images), expected, atol=1e-5, rtol=0)
    net.preprocess(images).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
