"""DiG-IN's neuron prompt: the template with the candidate word whose plain samples raise the channel most."""

from __future__ import annotations

import json

import pytest

from featscope import investigate
from featscope.backbones import load_backbone
from featscope.errors import FeatscopeError
from featscope.extractors import load_extractor
from featscope.investigate.neuron_prompts import candidate_words, choose_prompt
from featscope.solvers.configs import endtoend_defaults

FAST = {"num_steps": 8, "iterations": 1, "cutouts": 1, "loss_steps": 1}


@pytest.fixture(scope="module")
def models():
    return load_backbone("world:ddpm", device="cpu"), load_extractor("world:shape-net@fc", device="cpu").eval()


def test_the_candidates_are_the_classes_or_those_the_last_layer_weights_the_channel_most(models):
    _, net = models
    assert candidate_words(net, None, 3) == list(net.labels)  # 5 classes: all of them
    weight = net.network.fc.weight[:, 3]
    top, bottom = int(weight.argmax()), int(weight.argmin())
    assert candidate_words(net, None, 3, count=1) == [net.labels[top]]
    assert candidate_words(net, None, 3, count=1, maximise=False) == [net.labels[bottom]]
    with pytest.raises(FeatscopeError, match="name the candidate words"):
        candidate_words(net, "layer3", 0, count=2)


def test_a_class_logit_starts_from_its_own_class_word(models):
    """The 'square' logit of shape-net (a neuron of fc's output) is raised most by plain samples of 'square'."""
    backbone, net = models
    config = endtoend_defaults("world:ddpm", "neuron").with_overrides(num_steps=8)
    square = list(net.labels).index("square")
    choice = choose_prompt(backbone, net, square, words=net.labels, template="{label}", layer="fc", probes=3,
                           config=config)  # fmt: skip
    assert choice.word == "square" and choice.prompt == "square"
    assert set(choice.mean_activation) == set(net.labels)
    assert choice.mean_activation["square"] == max(choice.mean_activation.values())
    lowered = choose_prompt(backbone, net, square, words=net.labels, template="{label}", layer="fc", probes=3,
                            maximise=False, config=config)  # fmt: skip
    assert lowered.word != "square" and lowered.word == min(lowered.mean_activation, key=lowered.mean_activation.get)


def test_a_neuron_run_records_the_chosen_prompt_and_an_empty_prompt_stays_reachable(tmp_path):
    common = dict(device="cpu", quiet=True, prompt_probes=1, **FAST)
    investigate.neuron("world:shape-net@fc", "fc", [1], out=tmp_path / "auto", prompt_words=["circle", "square"],
                       **common)  # fmt: skip
    metrics = json.loads((tmp_path / "auto" / "neuron1_s0" / "metrics.json").read_text())
    choice = metrics["prompt_choice"]
    assert set(choice["mean_activation"]) == {"circle", "square"} and metrics["prompt"] == choice["word"]
    investigate.neuron("world:shape-net@fc", "fc", [1], out=tmp_path / "empty", prompt="", **common)
    metrics = json.loads((tmp_path / "empty" / "neuron1_s0" / "metrics.json").read_text())
    assert metrics["prompt"] == "" and "prompt_choice" not in metrics
