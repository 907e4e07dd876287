"""The latent world's Stable Diffusion 1.x pipeline: tokenizer, layout, loading, and its training recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

from featscope.backbones import load_backbone
from featscope.cli import main
from featscope.world.kinds import KINDS
from featscope.world.latent import (
    MAX_TOKENS,
    SHIPPED,
    TINY,
    WORDS,
    build_pipeline,
    build_tokenizer,
    save_pipeline,
)
from featscope.world.latent_train import export_pipeline, train_unet, train_vae


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_pipeline(build_pipeline(TINY, seed=1), tmp_path_factory.mktemp("latent") / "pipe")


def test_every_caption_word_is_one_known_token(tokenizer):
    unknown = tokenizer.unk_token_id
    for word in WORDS:
        pieces = word.split("-")  # CLIP splits positions such as top-left at the hyphen
        tokens = tokenizer.tokenize(word)
        assert tokens == [p + "</w>" for p in " - ".join(pieces).split()], (word, tokens)
    _, records = KINDS["patterns64"].generate(200, 3)
    for record in records:
        ids = tokenizer(record.caption()).input_ids  # CLIP's unknown token is also its end and padding token
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert unknown not in ids[1:-1] and len(ids) <= MAX_TOKENS  # captions are never truncated
    assert tokenizer.decode(tokenizer("Large BLUE house").input_ids, skip_special_tokens=True) == "large blue house"


def test_unknown_words_are_spelled_not_lost(tokenizer):
    ids = tokenizer("a purple hexagon 7").input_ids
    assert tokenizer.unk_token_id not in ids[1:-1] and len(ids) > 6
    assert tokenizer.unk_token_id in tokenizer("red #").input_ids[1:-1]  # outside the alphabet: unknown


def test_diffusers_loads_the_folder_unchanged_and_samples(tiny_folder):
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {k for k in index if not k.startswith("_")} >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    scheduler = json.loads((tiny_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "PNDMScheduler" and scheduler["beta_schedule"] == "scaled_linear"
    assert (scheduler["beta_start"], scheduler["beta_end"], scheduler["steps_offset"]) == (0.00085, 0.012, 1)
    assert scheduler["timestep_spacing"] == "leading" and scheduler["prediction_type"] == "epsilon"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder)
    out = pipe(
        ["small red striped star top-left on dark tagged"],
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    image = out.images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 0


def test_featscope_loads_it_as_a_users_sd_folder(tiny_folder):
    backbone = load_backbone(f"sd:{tiny_folder}")
    assert backbone.is_latent and backbone.latent_shape == (4, 16, 16) and backbone.image_size == (64, 64)
    cond = backbone.encode_prompt(["blue dotted circle", ""])
    assert cond.shape == (2, MAX_TOKENS, TINY.text_dim) and not torch.allclose(cond[0], cond[1])
    images = torch.rand(2, 3, 64, 64)
    assert backbone.decode(backbone.encode(images)).shape == (2, 3, 64, 64)


def test_the_shipped_sizes_stay_well_under_the_budget(tmp_path):
    folder = save_pipeline(build_pipeline(SHIPPED), tmp_path / "pipe")
    megabytes = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    assert megabytes < 20, megabytes  # of the package's 40 MB, with the shipped world's 16 MB and its networks


def _losses(folder, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (folder / "log.jsonl").read_text().splitlines()]


def test_training_recipe_lowers_both_losses_and_exports_a_pipeline(tmp_path):
    vae_folder = train_vae(tmp_path / "vae", 30, sizes=TINY, batch_size=4, pool_size=4, lr=3e-3, quiet=True)
    l1 = _losses(tmp_path / "vae", "l1")
    assert len(l1) == 30 and np.mean(l1[-5:]) < 0.95 * np.mean(l1[:5]), l1
    vae = AutoencoderKL.from_pretrained(vae_folder)
    with torch.no_grad():
        latents = vae.encode(torch.rand(8, 3, 64, 64) * 2 - 1).latent_dist.mean
    assert latents.shape == (8, 4, 16, 16) and vae.config.scaling_factor != 1.0
    ckpt = train_unet(tmp_path / "unet", 30, vae_folder, sizes=TINY, batch_size=4, pool_size=4, lr=3e-3, quiet=True)
    eps = _losses(tmp_path / "unet")
    assert len(eps) == 30 and np.mean(eps[-10:]) < 0.9 * np.mean(eps[:10]), eps
    again = train_unet(tmp_path / "unet", 31, vae_folder, sizes=TINY, batch_size=4, pool_size=4, quiet=True)
    assert again == ckpt and len(_losses(tmp_path / "unet")) == 31  # resumed from step 30, not restarted
    pipe = StableDiffusionPipeline.from_pretrained(export_pipeline(ckpt, tmp_path / "pipe"))
    assert pipe.vae.config.scaling_factor == vae.config.scaling_factor


def test_cli_asks_for_the_vae_before_training_the_unet(tmp_path, capsys):
    assert main(["world", "train", "latent-unet", "--out", str(tmp_path / "unet"), "--steps", "1"]) == 2
    assert "pass --vae OUT/vae from latent-vae" in capsys.readouterr().err
    assert not (tmp_path / "unet").exists()
