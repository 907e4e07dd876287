"""Captions from an image-to-text model: a tiny random BLIP saved with save_pretrained, loaded back, used by invert."""

from __future__ import annotations

import pytest

from featscope.captioning import load_captioner
from featscope.images import load_image
from test_masks import VOCABULARY, _save_tiny_blip

TINY = ["--steps", "2", "--inner-steps", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def blip(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    _save_tiny_blip(root / "blip")
    return root / "blip"


@pytest.fixture
def picture(tmp_path, target_png):
    """A copy of the 16 px noise image in a fresh folder (no caption file beside it)."""
    path = tmp_path / "noise.png"
    path.write_bytes(target_png.read_bytes())
    return path


def test_a_saved_captioner_captions_files_and_tensors_alike(blip, picture):
    captioner = load_captioner(str(blip))
    from_file, from_tensor = captioner.caption([picture, load_image(picture)[0]])
    assert isinstance(from_file, str) and from_file == from_tensor
    assert from_file and set(from_file.split()) <= set(VOCABULARY)  # words of its vocabulary, special tokens dropped


def test_invert_captions_with_the_model_after_the_prompt_and_the_caption_file(featscope_main, blip, picture,
                                                                               tiny_sd_folder, tmp_path):  # fmt: skip
    expected = load_captioner(str(blip)).caption([picture])[0]
    common = ["invert", str(picture), "--backbone", f"sd:{tiny_sd_folder}", "--caption-model", str(blip), *TINY]
    result = featscope_main(*common, "--out", str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model" / "noise" / "prompt.txt").read_text().strip() == expected
    picture.with_suffix(".txt").write_text("a red cat")
    assert featscope_main(*common, "--out", str(tmp_path / "file")).returncode == 0
    assert (tmp_path / "file" / "noise" / "prompt.txt").read_text().strip() == "a red cat"
    assert featscope_main(*common, "--prompt", "a dog", "--out", str(tmp_path / "prompt")).returncode == 0
    assert (tmp_path / "prompt" / "noise" / "prompt.txt").read_text().strip() == "a dog"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./no_such_blip", "captioning model './no_such_blip' is not a folder"),
        ("nobody/no-such-captioner", "not in the local Hugging Face cache (the hub is offline)"),
        ("EMPTY", "cannot load the captioning model"),
    ],
    ids=["missing-folder", "uncached-hub-id", "empty-folder"],
)
def test_a_caption_model_that_cannot_load_is_one_line_and_exit_2(featscope_main, picture, tmp_path, monkeypatch,
                                                                 spec, message):  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if spec == "EMPTY":
        (tmp_path / "empty").mkdir()
        spec = str(tmp_path / "empty")
    result = featscope_main("invert", str(picture), "--caption-model", spec, "--out", str(tmp_path / "o"),
                            "--device", "cpu", "--quiet")  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_class_prompted_caption_continues_the_prefix_so_the_class_word_is_in_it(blip, picture):
    """DiG-IN prompts its captioner with 'an image of a {class}': the caption continues it, so masks and word swaps
    find the class word; a loose file (no class) and the prefix 'none' caption unprompted."""
    from featscope.datasets import ImageItem
    from featscope.errors import FeatscopeError
    from featscope.investigate.captions import Captions
    from featscope.investigate.settings import CounterfactualSettings

    captioner = load_captioner(str(blip))
    plain = captioner.caption([picture])[0]
    prefixed = captioner.caption([picture], "a photo of a circle")[0]
    assert prefixed.startswith("a photo of a circle") and prefixed != plain
    captions = Captions(None, "{label}", captioner, "a photo of a {label}")
    assert captions.of(ImageItem(picture, "circle", "circle", 0), "circle") == prefixed
    assert captions.of_entry(ImageItem(picture, "", "", -1)) == plain
    assert Captions(None, "{label}", captioner, None).of(ImageItem(picture, "circle", "circle", 0), "circle") == plain
    assert CounterfactualSettings().caption_prefix == "an image of a {label}"
    with pytest.raises(FeatscopeError, match="caption prefix 'a photo' has no"):
        CounterfactualSettings(caption_prefix="a photo").validate()
