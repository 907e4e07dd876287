"""Foreground masks: cross-attention of the class word (world and tiny SD), SAM from a saved folder, CLI paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from featscope import investigate
from featscope.backbones import load_backbone
from featscope.cli import main
from featscope.errors import FeatscopeError
from featscope.inversion import ddim_invert
from featscope.investigate.masks import (
    cross_attention_map,
    load_sam,
    parse_mask,
    sam_mask,
    threshold_mask,
    word_tokens,
)
from featscope.world.render import generate, object_mask
from shared_inputs import save_world_image

TINY = ["--steps", "3", "--iterations", "1", "--cutouts", "1", "--inner-steps", "1", "--device", "cpu", "--quiet"]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


@pytest.fixture(scope="module")
def world_backbone():
    return load_backbone("world:ddpm", device="cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """square.png (a world image) with its caption, shapes/<class>/*.png, and a tiny random SAM and BLIP
    saved with save_pretrained."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    root = tmp_path_factory.mktemp("masks")
    save_world_image(root / "square.png", seed=5, shape="square")
    for shape in ("circle", "square"):
        (root / "shapes" / shape).mkdir(parents=True)
        for i, image in enumerate(generate(2, seed=3, shape=shape)[0]):
            Image.fromarray(image).save(root / "shapes" / shape / f"img{i}.png")
    _save_tiny_blip(root / "blip")
    config = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=16, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=8, window_size=4, global_attn_indexes=[1], num_pos_feats=8,
                           mlp_dim=32),
        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=16),
    )  # fmt: skip
    torch.manual_seed(0)
    SamModel(config).save_pretrained(root / "sam")
    image_processor = SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16},
    )  # fmt: skip
    SamProcessor(image_processor=image_processor).save_pretrained(root / "sam")
    return root


VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "red", "circle", "square", "on", "dark"]


def _save_tiny_blip(folder):
    """A tiny random BLIP captioner with a word-level BERT tokenizer written offline."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCABULARY) + "\n")
    config = BlipConfig(
        text_config=dict(vocab_size=len(VOCABULARY), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, encoder_hidden_size=16, bos_token_id=2,
                         sep_token_id=3, pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(folder)


# -- cross-attention on the embedded world ---------------------------------------------------------
def test_cross_attention_mask_finds_the_world_object(world_backbone):
    """The shape word's attention mask overlaps the rendered object far better than the same mask moved away."""
    unet = world_backbone.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    pixels, records = generate(8, seed=11)
    ious, shifted, chance = [], [], []
    for image, record in zip(pixels, records, strict=True):
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        caption = record.caption()  # e.g. "small red circle top-left on dark"
        x_t = ddim_invert(world_backbone, x, caption, 10)[-1]  # IoU .338 (.363 at 20 steps), shifted .048, random .123
        soft = cross_attention_map(world_backbone, x_t, caption, record.shape)
        assert soft.shape == (1, 1, 32, 32) and soft.min() == 0 and soft.max() == 1
        mask = threshold_mask(soft)[0, 0].bool()
        truth = torch.from_numpy(object_mask(record)) > 0.5
        ious.append(_iou(mask, truth))
        shifted.append(_iou(torch.roll(mask, (16, 16), (0, 1)), truth))
        p, q = mask.float().mean(), truth.float().mean()
        chance.append(float(p * q / (p + q - p * q)))  # expected IoU of a random mask of the same area
    iou, moved, random = np.mean(ious), np.mean(shifted), np.mean(chance)
    print(f"world cross-attention IoU {iou:.3f}, shifted {moved:.3f}, random {random:.3f}")
    assert iou > 2 * moved and iou > 1.5 * random and iou > 0.2
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before  # processors restored


def test_thresholds_and_mask_specs():
    soft = torch.cat([torch.full((1, 1, 4, 8), 0.1), torch.full((1, 1, 4, 8), 0.9)], 2)
    assert threshold_mask(soft, "otsu").sum() == 32 and threshold_mask(soft, 0.95).sum() == 0
    assert parse_mask("cross-attention").threshold == 0.3 and parse_mask("cross-attention:otsu").threshold == "otsu"
    assert parse_mask("sam:models/sam").source == "models/sam" and parse_mask("mask.png") is None
    with pytest.raises(FeatscopeError, match="threshold must be a number"):
        parse_mask("cross-attention:2")


# -- tiny Stable Diffusion: CLIP tokens, shapes, the CLI end to end --------------------------------
def test_tiny_sd_tokens_and_map(tiny_sd_backbone):
    tokenizer = tiny_sd_backbone.prompt_encoder.tokenizer
    assert word_tokens(tiny_sd_backbone, "a cat", "cat") == [2]  # <bos> a cat
    pieces = len(tokenizer("square", add_special_tokens=False).input_ids)
    assert word_tokens(tiny_sd_backbone, "a square", "square") == list(range(2, 2 + pieces))
    x_t = torch.randn(1, *tiny_sd_backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    soft = cross_attention_map(tiny_sd_backbone, x_t, "a red cat", "cat", num_steps=4)
    assert soft.shape == (1, 1, *tiny_sd_backbone.image_size)
    assert soft.min() >= 0 and soft.max() == 1 and torch.isfinite(soft).all()


def test_cli_counterfactual_on_stable_diffusion_masks_by_default(tiny_sd_folder, folder, tmp_path, capsys):
    """DiG-IN always masks: without --mask a Stable Diffusion counterfactual makes the start class word's
    cross-attention mask, post-processed as published (scaled to the image), and config.yaml says so."""
    out = tmp_path / "cf"
    args = ["investigate", "counterfactual", "--net", "world:shape-net@fc", str(folder / "square.png"), "--start",
            "square", "--target", "circle", "--prompt", "a square", "--backbone", f"sd:{tiny_sd_folder}",
            "--out", str(out), *TINY]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err[-2000:]
    item = out / "square_to_circle"
    settings = yaml.safe_load((item / "config.yaml").read_text())["settings"]
    assert settings["mask"] == "cross-attention" and list(settings["mask_postprocess"]) == ["published"]
    mask = np.asarray(Image.open(item / "mask.png").convert("L"))
    attention = np.asarray(Image.open(item / "attention.png").convert("L"))
    assert mask.shape == attention.shape == (16, 16)
    assert 0 < (mask > 127).sum() < mask.size  # a foreground and a background
    assert (item / "metrics.json").is_file()


# -- SAM from a folder saved with save_pretrained --------------------------------------------------
def test_sam_mask_from_a_saved_folder(world_backbone, folder, tmp_path):
    sam = load_sam(str(folder / "sam"))
    image = torch.from_numpy(np.asarray(Image.open(folder / "square.png")).copy()).permute(2, 0, 1)[None] / 255
    soft = torch.zeros(1, 1, 32, 32)
    soft[..., 10:20, 12:22] = 1
    mask = sam_mask(sam, image.float(), soft)
    assert mask.shape == (1, 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}

    out = tmp_path / "cf"
    investigate.counterfactual(
        "world:shape-net@fc", [folder / "square.png"], "square", "circle", out=out, mask=f"sam:{folder / 'sam'}",
        inner_steps=1, num_steps=3, iterations=1, cutouts=1, device="cpu", quiet=True,
    )  # fmt: skip
    saved = np.asarray(Image.open(out / "square_to_circle" / "mask.png").convert("L"))
    assert saved.shape == (32, 32) and set(np.unique(saved)) <= {0, 255}


# -- naming neurons by the captions of their top images ------------------------------------------
def test_neuron_named_by_a_captioning_model(folder, tmp_path):
    settings = {"top_k": 2, "num_steps": 3, "iterations": 1, "cutouts": 1, "device": "cpu", "quiet": True}
    out = tmp_path / "named"
    investigate.neuron("world:shape-net@fc", None, [1], out=out, images_folder=folder / "shapes",
                       namer=f"vlm:{folder / 'blip'}", **settings)  # fmt: skip
    tops = json.loads((out / "neuron1_s0" / "top_k.json").read_text())
    name = json.loads((out / "neuron1_s0" / "metrics.json").read_text())["name"]
    assert len(tops) == 2 and all(isinstance(t["caption"], str) for t in tops)
    words = {w for t in tops for w in t["caption"].split()}
    assert name["by"].startswith("vlm:") and (name["name"] is None or name["name"] in words)
    assert set(name["counts"]) <= words - {"a", "of", "on", "photo"}  # stop words never name a neuron

    out = tmp_path / "classes"
    investigate.neuron("world:shape-net@fc", None, [1], out=out, images_folder=folder / "shapes", **settings)
    name = json.loads((out / "neuron1_s0" / "metrics.json").read_text())["name"]
    assert name["by"] == "classes" and name["name"] in {"circle", "square"} and sum(name["counts"].values()) == 2


# -- user mistakes: one line, exit 2 -------------------------------------------------------------
@pytest.mark.parametrize(
    "mask, start, prompt, message",
    [
        ("cross-attention", "reconstruction", "red circle on dark", "the class word 'square' is not in the caption"),
        ("none", "word-swap", "red circle on dark", "the start class word 'square' is not in the caption 'red circle "
         "on dark', and the word-swap start replaces it; give --prompt with it, or --start-from reconstruction"),
        ("sam:no_such_sam", "word-swap", None, "SAM model 'no_such_sam' is not a folder"),
    ],
    ids=["word-not-in-caption", "word-swap-start-without-the-word", "missing-sam"],
)  # fmt: skip
def test_mask_mistakes_are_one_line_errors(folder, mask, start, prompt, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["investigate", "counterfactual", "--net", "world:shape-net@fc", str(folder / "square.png"), "--start",
            "square", "--target", "circle", "--mask", mask, "--start-from", start, "--out", str(folder / "unused"),
            *TINY]  # fmt: skip
    args += ["--prompt", prompt] if prompt else []
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featscope: error:") and message in lines[0], lines


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--namer", "vlm:no_such_blip"], "captioning model 'no_such_blip' is not a folder"),
        (["--namer", "blip"], "namer 'blip': use vlm:FOLDER"),
    ],
    ids=["missing-vlm", "bad-namer"],
)
def test_namer_mistakes_are_one_line_errors(folder, extra, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["investigate", "neuron", "--net", "world:shape-net@fc", "--images-folder", str(folder / "shapes"),
            "--out", str(folder / "unused"), *extra, *TINY[:6], "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featscope: error:") and message in lines[0], lines
