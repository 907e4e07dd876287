"""Word-swap counterfactuals: token mapper, cross-attention re-injection (tiny SD), core and CLI on the world."""

from __future__ import annotations

import json

import pytest
import torch

from featscope.errors import FeatscopeError
from featscope.images import to_tensor
from featscope.investigate import cores
from featscope.investigate.attention import CrossAttentionReplace
from featscope.investigate.wordswap import prompt_to_prompt, swap_word, token_mapper, word_swap_core
from featscope.solvers.configs import WordSwapConfig
from featscope.world.render import generate
from shared_inputs import ITEM_LAYOUT, save_world_image

TINY = ["--steps", "3", "--inner-steps", "1", "--taus", "0,1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def circle(tmp_path_factory):
    """circle.png, a world circle with its caption in circle.txt."""
    root = tmp_path_factory.mktemp("wordswap")
    save_world_image(root / "circle.png", seed=4, shape="circle")
    return root


def test_swap_replaces_whole_words_and_the_mapper_aligns_their_tokens(tiny_sd_backbone):
    assert swap_word("a Cat on a cattle cat", "cat", "dog") == "a dog on a cattle dog"
    with pytest.raises(FeatscopeError, match="'cow' is not in the caption"):
        swap_word("a cat", "cow", "dog")
    # one token each ("cat</w>", "dog</w>"): the map is the identity
    assert torch.equal(token_mapper(tiny_sd_backbone, "a cat on red", "a dog on red", "cat", "dog"), torch.eye(12))
    # one-token "cat" -> two-token "red" ("re", "d</w>"): the old token gives half to each, the rest shift by one
    mapper = token_mapper(tiny_sd_backbone, "a cat on dog", "a red on dog", "cat", "red")
    assert mapper[1, 1] == mapper[3, 4] == 1 and mapper[2, 2] == mapper[2, 3] == 0.5
    assert torch.equal(mapper.sum(1), torch.ones(12))  # every source token's attention is passed on whole
    with pytest.raises(FeatscopeError, match="is in the caption already"):
        token_mapper(tiny_sd_backbone, "a cat on red", "a red on red", "cat", "red")


class _Probe(CrossAttentionReplace):
    """Also keeps, per step, whether the edited stream's conditional attention equals the source's."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.equal: dict[int, list[bool]] = {}

    def edit(self, probs: torch.Tensor, batch: int) -> torch.Tensor:
        out = super().edit(probs, batch).view(batch, -1, *probs.shape[1:])
        cond = batch - self.streams
        self.equal.setdefault(self.step, []).append(bool(torch.equal(out[cond], out[cond + 1])))
        return out.view_as(probs)


def test_reinjection_copies_the_source_attention_for_tau_of_the_steps_then_restores_the_processors(
    tiny_sd_backbone, monkeypatch
):
    from featscope.investigate import wordswap

    backbone = tiny_sd_backbone
    before = {k: type(v) for k, v in backbone.unet.attn_processors.items()}
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x_t, null_texts = cores.null_inversion(backbone, image, "a cat", num_steps=4, guidance_scale=3.0, inner_steps=1)
    mapper = token_mapper(backbone, "a cat", "a dog", "cat", "dog")
    probes = []
    monkeypatch.setattr(wordswap, "CrossAttentionReplace", lambda *a: probes.append(_Probe(*a)) or probes[-1])
    source, edited = prompt_to_prompt(backbone, x_t, null_texts, "a cat", "a dog", [0.5], mapper=mapper,
                                      guidance_scale=3.0)  # fmt: skip
    equal = probes[0].equal
    assert all(all(equal[step]) for step in (0, 1))  # the first half of the steps: the source's probabilities
    assert not any(any(equal[step]) for step in (2, 3))  # then the edited caption's own
    assert {k: type(v) for k, v in backbone.unet.attn_processors.items()} == before
    _, again = prompt_to_prompt(backbone, x_t, null_texts, "a cat", "a dog", [0.5, 0.0], mapper=mapper,
                                guidance_scale=3.0)  # fmt: skip
    torch.testing.assert_close(again[0], edited[0], atol=1e-5, rtol=0)  # a stream does not depend on the others
    assert float((again[1] - again[0]).abs().max()) > 1e-4  # re-injection changes the result
    assert source.shape == (1, 3, 16, 16)


def test_word_swap_flips_world_circles_to_squares(world):
    """On the world, the caption's shape word decides the shape: every tau's swap is a square for shape-net."""
    backbone, net = world
    pixels, records = generate(1, seed=21, shape="circle")
    captions = [r.caption() for r in records]
    config = WordSwapConfig(num_steps=4, inner_steps=1, taus=(0.0, 1.0))
    result = word_swap_core(backbone, net, to_tensor(pixels), "circle", "square", prompts=captions, config=config)
    assert result.edited_prompts == [c.replace("circle", "square") for c in captions]
    assert result.images.shape == (2, 1, 3, 32, 32) and result.best.shape == (1, 3, 32, 32)
    assert all(result.flipped)  # measured: p(square) 1.00 at both taus
    assert all(c[0] < 0.5 for c in result.target_confidence)  # the images themselves are circles
    for b, k in enumerate(result.chosen):  # the nearest flipped result is kept
        flipped = [j for j in range(2) if result.target_confidence[b][1 + j] > 0.5]
        assert k == min(flipped, key=lambda j: result.distance[b]["l2"][j])


def test_word_swap_cli_writes_the_run_folder_layout(featscope_main, circle, tmp_path):
    out = tmp_path / "swap"
    args = ["investigate", "word-swap", "--net", "world:shape-net@fc", str(circle / "circle.png"), "--start", "circle",
            "--target", "square", "--out", str(out), *TINY]  # fmt: skip
    result = featscope_main(*args)
    assert result.returncode == 0, result.stderr
    folder = out / "circle_to_square"
    assert all((folder / name).is_file() for name in ITEM_LAYOUT)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["prompt"] == (circle / "circle.txt").read_text()
    assert metrics["edited_prompt"] == metrics["prompt"].replace("circle", "square")
    assert metrics["taus"] == [0.0, 1.0] and metrics["chosen_tau"] in (0.0, 1.0)
    assert len((folder / "log.jsonl").read_text().splitlines()) == 2 + 1  # one line per tau, then the item's


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--word", "triangle"], "the word 'triangle' is not in the caption"),
        (["--new-word", "dog"], "world captions use attribute words only"),
        (["--taus", "0,2"], "taus must be fractions in [0, 1]"),
    ],
    ids=["word-not-in-caption", "unknown-new-word", "bad-tau"],
)
def test_word_swap_bad_input_is_one_line_and_exit_2(featscope_main, circle, tmp_path, extra, message):
    args = ["investigate", "word-swap", "--net", "world:shape-net@fc", str(circle / "circle.png"), "--start", "circle",
            "--target", "square", "--out", str(tmp_path / "o"), *TINY, *extra]  # fmt: skip
    result = featscope_main(*args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "circle_to_square").exists()


def test_word_swap_runs_on_tiny_sd_with_a_word_of_another_token_length(featscope_main, tiny_sd_folder, target_png,
                                                                       tmp_path):  # fmt: skip
    """The user's own network (class indices), CLIP BPE tokens: one-token "cat" becomes two-token "red"."""
    out = tmp_path / "sd"
    result = featscope_main("investigate", "word-swap", "--net", "tiny_nets:tiny_cnn", "--backbone",
                            f"sd:{tiny_sd_folder}", str(target_png), "--start", "0", "--target", "1", "--word", "cat",
                            "--new-word", "red", "--prompt", "a cat on dog", "--out", str(out), *TINY)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "noise_to_1" / "metrics.json").read_text())
    assert metrics["edited_prompt"] == "a red on dog" and len(metrics["confidence"]["target_class"]["per_tau"]) == 2
