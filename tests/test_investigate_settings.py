"""Each investigation's options are one settings dataclass: the command line and the study's keys are derived from
it (a study takes every value the command line takes), config.yaml records it under ``settings``; the package is
split by job into short functions, and its cores do not import the embedded world."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import featscope
from featscope.errors import FeatscopeError
from featscope.investigate import (
    CounterfactualSettings,
    DifferenceSettings,
    InvertSettings,
    NeuronImagesSettings,
    NeuronSettings,
    WordSwapSettings,
)
from featscope.settings import knob_of, plain_value
from featscope.solvers.configs import EndToEndConfig, WordSwapConfig
from featscope.study import METHODS, StudyError, load_study

TESTS = Path(__file__).parent
PACKAGE = Path(featscope.__file__).parent / "investigate"
ALL = (DifferenceSettings, NeuronSettings, NeuronImagesSettings, CounterfactualSettings, WordSwapSettings,
       InvertSettings)  # fmt: skip
KINDS = {"difference": "difference", "neuron": "neuron", "counterfactual": "counterfactual", "word-swap": "word-swap"}
STUDY_NAME = {"seed": "seeds", "target": "target_classes"}  # a command-line option -> its study key
NOT_IN_A_STUDY = {
    "out": "the study's out",
    "device": "the study's device (featscope batch --device)",
    "quiet": "featscope batch --quiet",
    "samples_per_class": "a job is one item: more samples are more seeds",
    "samples": "a job is one item: more samples are more seeds",
    "minimise": "maximise: false (the command line's --direction down)",
    "class_names": "a study names image files, not a dataset folder",
    "classes": "a study names image files, not a dataset folder (difference: its classes key)",
    "images_per_class": "a study names image files, not a dataset folder",
}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from featscope.cli import build_parser

    top = build_parser("investigate")
    investigate = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices["investigate"]
    return next(a for a in investigate._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}


# -- one declaration: the command line and the study are derived from the settings ------------------
def test_every_command_line_option_of_every_investigation_is_a_study_key():
    parsers = _parsers()
    assert set(parsers) == set(KINDS)
    for kind, parser in parsers.items():
        method = METHODS[KINDS[kind]]
        keys = set(method.fields) | {f.name for f in dataclasses.fields(method.settings())}
        for dest in _options(parser):
            if dest in NOT_IN_A_STUDY and dest not in keys:
                continue
            assert STUDY_NAME.get(dest, dest) in keys, f"investigate {kind} {dest}: no study key"


def test_every_knob_is_an_option_and_a_study_key_with_the_same_help():
    parsers = _parsers()
    for kind, classes in [("difference", [DifferenceSettings]), ("neuron", [NeuronSettings, NeuronImagesSettings]),
                          ("counterfactual", [CounterfactualSettings]), ("word-swap", [WordSwapSettings])]:  # fmt: skip
        options, fields = _options(parsers[kind]), METHODS[KINDS[kind]].fields
        for cls in classes:
            for f in dataclasses.fields(cls):
                flag = knob_of(f).flag or "--" + f.name.replace("_", "-")
                assert flag in options[f.name].option_strings and options[f.name].default is None, (kind, f.name)
                assert f.name in fields or f.name in NOT_IN_A_STUDY, (kind, f.name)
                if f.name in fields:
                    assert fields[f.name].doc == knob_of(f).help, (kind, f.name)


def test_each_knob_is_declared_once():
    """A knob shared by methods comes from one dataclass (``inner_steps`` from InnerSteps, the captions from
    CaptionSettings); a method's settings and its solver's never share a name (config.yaml merges them)."""
    owners: dict[str, set[type]] = {}
    for cls in (*ALL, EndToEndConfig, WordSwapConfig):
        for f in dataclasses.fields(cls):
            declared = next(c for c in reversed(cls.__mro__) if f.name in getattr(c, "__annotations__", {}))
            owners.setdefault(f.name, set()).add(declared)
    shared = {name: classes for name, classes in owners.items() if len(classes) > 1}
    assert set(shared) == {"loss", "num_steps", "guidance_scale"}  # the solvers' own, and two different losses
    assert {c.__name__ for c in owners["inner_steps"]} == {"InnerSteps"}
    for cls, solver in [(DifferenceSettings, EndToEndConfig), (NeuronSettings, EndToEndConfig),
                        (NeuronImagesSettings, EndToEndConfig), (CounterfactualSettings, EndToEndConfig),
                        (WordSwapSettings, WordSwapConfig)]:  # fmt: skip
        assert not {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(solver)}


def test_list_and_direction_knobs_read_the_command_line_spelling():
    parsers = _parsers()
    args = parsers["counterfactual"].parse_args(
        ["--net", "n", "--target", "t", "x.png", "--regularizers", "pixel_l2, px_background_l2",
         "--regularizer-weights", "25,250", "--mask-postprocess", "erosion_3,dilation_5", "--mask", "none"]
    )  # fmt: skip
    assert args.regularizers == ("pixel_l2", "px_background_l2") and args.regularizer_weights == (25.0, 250.0)
    assert args.mask_postprocess == ("erosion_3", "dilation_5") and args.mask == "none"
    assert parsers["neuron"].parse_args(["--net", "n", "--direction", "down"]).maximise is False
    assert parsers["word-swap"].parse_args(["--net", "n", "--target", "t", "x.png", "--taus", "0,0.5"]).taus == (0, 0.5)
    with pytest.raises(SystemExit):
        parsers["counterfactual"].parse_args(["--net", "n", "--target", "t", "x.png", "--regularizer-weights", "a"])
    assert "(default: 25,250)" in parsers["counterfactual"].format_help()
    field = {f.name: f for f in dataclasses.fields(CounterfactualSettings)}
    assert plain_value(field["regularizer_weights"], "25,250") == plain_value(field["regularizer_weights"], [25, 250])
    assert plain_value(field["mask_postprocess"], "erosion_3") == ("erosion_3",)
    with pytest.raises(ValueError, match="invalid choice 'mse'"):
        plain_value(field["loss"], "mse")


def test_settings_validate_their_knobs_together():
    assert CounterfactualSettings(regularizers="pixel_l2", regularizer_weights=[10]).regularizer_weights == (10.0,)
    for settings, message in [
        (CounterfactualSettings(regularizer_weights=(1.0,)), "2 regularizers but 1 weights"),
        (CounterfactualSettings(mask="cross-attention:2"), "the threshold must be a number in"),
        (CounterfactualSettings(mask_postprocess=("open_3",)), "unknown mask post-processing step 'open_3'"),
        (CounterfactualSettings(loss="mse"), "invalid choice 'mse'"),
        (NeuronImagesSettings(start_blend=1.5), "start_tau and start_blend are shares of the steps"),
        (NeuronSettings(namer="blip", images_folder="x"), "namer 'blip': use vlm:FOLDER"),
        (DifferenceSettings(prompt_template="a photo"), "has no {label}"),
        (InvertSettings(guidance_scale=1.0), "use guidance_scale > 1"),
    ]:
        with pytest.raises(FeatscopeError, match=message.replace("{", r"\{").replace("}", r"\}")):
            settings.validate()


def test_the_api_takes_a_settings_object_or_its_fields_and_names_unknown_ones(tmp_path):
    from featscope import investigate

    unknown = "unknown setting 'los' for difference; did you mean loss.*; known: prompt_template"
    with pytest.raises(FeatscopeError, match=unknown):
        investigate.difference("world:shape-net@fc", "world:spurious-net@fc", ["circle"], out=tmp_path, los="conf")
    with pytest.raises(FeatscopeError, match="samples_per_class must be at least 1"):
        investigate.difference("world:shape-net@fc", "world:spurious-net@fc", ["circle"], out=tmp_path,
                               settings=DifferenceSettings(loss="log_conf"), samples_per_class=0)  # fmt: skip
    assert not list(tmp_path.iterdir())


# -- a study takes what the command line takes --------------------------------------------------
@pytest.fixture
def folder(tmp_path, monkeypatch) -> Path:
    """The example images and a mask beside them, the working directory (where a dict study's paths start)."""
    monkeypatch.chdir(tmp_path)
    for png in (TESTS.parent / "examples").glob("*.png"):
        shutil.copy(png, tmp_path / png.name)
    shutil.copy(tmp_path / "yellow-star.png", tmp_path / "star-mask.png")
    return tmp_path


def _entry(method: str, **keys) -> dict:
    images = {"images": "yellow-star.png", "start": "star", "target_classes": "circle"}
    base = {"neuron": {"channels": 1}, "difference": {"net2": "world:spurious-net@fc", "classes": "star"}}
    net = {"net1": "world:shape-net@fc"} if method == "difference" else {"net": "world:shape-net@fc"}
    return {"method": method, **net, **base.get(method, images), **keys}


def test_a_study_takes_every_mask_the_command_line_takes(folder):
    masks = ["cross-attention:otsu", "none", "cross-attention", "cross-attention:0.4", "star-mask.png"]
    jobs = [_entry("counterfactual", name=f"m{i}", mask=mask) for i, mask in enumerate(masks)]
    jobs += [_entry("counterfactual", name="lists", regularizers="pixel_l2", regularizer_weights="10",
                    mask_postprocess="erosion_3,dilation_5", inner_steps=2, loss="log_conf"),
             _entry("neuron", images="yellow-star.png", mask="none", maximise="down", regularizers=[],
                    regularizer_weights=[], prompt="star"),
             _entry("word-swap", word="star", new_word="circle", settings={"taus": "0,0.5", "inner_steps": 1}),
             _entry("difference", loss="logit_margin", prompt_template="a {label}")]  # fmt: skip
    study = load_study({"out": str(folder / "out"), "jobs": jobs})
    by_name = {job.job_id.split("-")[0]: job for job in study.jobs}
    assert [by_name[f"m{i}"].params["mask"] for i in range(4)] == masks[:4]
    assert by_name["m4"].params["mask"] == str(folder / "star-mask.png")  # relative to the study's folder
    lists = by_name["lists"].params
    assert (lists["regularizers"], lists["regularizer_weights"]) == (("pixel_l2",), (10.0,))
    assert lists["mask_postprocess"] == ("erosion_3", "dilation_5") and lists["inner_steps"] == 2
    neuron = by_name["neuron"]
    assert neuron.params["maximise"] is False and neuron.params["images"] == str(folder / "yellow-star.png")
    assert by_name["word"].settings == {"taus": (0.0, 0.5), "inner_steps": 1}


def test_a_study_refuses_what_the_command_line_refuses(folder):
    jobs = [
        _entry("counterfactual", mask="cross-attention:2"),
        _entry("counterfactual", regularizer_weights=[1]),
        _entry("counterfactual", loss="mse"),
        _entry("neuron", images="yellow-star.png", start_tau=2),
        _entry("neuron", mask="star-mask.png"),
        _entry("neuron", samples=2),
        _entry("word-swap", settings={"taus": [0, 2]}),
    ]
    with pytest.raises(StudyError) as caught:
        load_study({"out": str(folder / "out"), "jobs": jobs})
    expected = [
        "jobs[0].mask: mask 'cross-attention:2': the threshold must be a number in (0, 1)",
        "jobs[1]: 2 regularizers but 1 weights",
        "jobs[2].loss: invalid choice 'mse' (choose from ce, conf, log_conf)",
        "jobs[3]: start_tau and start_blend are shares of the steps, in [0, 1]",
        "jobs[4]: mask applies to neuron jobs with images only",
        "jobs[5].samples: unknown key 'samples' for method neuron",
        "jobs[6].settings: taus must be fractions in [0, 1]",
    ]
    lines = str(caught.value).splitlines()[1:]
    assert len(lines) == len(expected), lines
    for fragment, line in zip(expected, lines, strict=True):
        assert fragment in line, (fragment, line)


# -- the package: short functions, no cycles, cores without the world -------------------------------
def test_no_function_of_investigate_is_longer_than_80_lines():
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > 80:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_cores_and_the_settings_import_neither_the_world_nor_torch_needlessly():
    code = (
        "import sys\nimport featscope.investigate.settings\nprint('torch' in sys.modules)\n"
        "import featscope.investigate.cores, featscope.investigate.masks, featscope.investigate.wordswap\n"
        "print(sorted(m for m in sys.modules if m.startswith('featscope.world')))"
    )
    env = {**os.environ, "PYTHONPATH": f"{PACKAGE.parents[1]}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["False", "[]"]


def test_every_investigation_declares_the_common_keywords_once(tmp_path):
    """The public functions share one declaration of out, backbone, settings, seed, device, quiet, config, ranks;
    their signatures show them (help, IDEs), and a method without a seed or a solver refuses one."""
    import inspect

    from featscope import investigate

    common = ["out", "backbone", "settings", "seed", "device", "quiet", "config", "ranks", "overrides"]
    signature = inspect.signature(investigate.counterfactual)
    assert list(signature.parameters) == ["net", "images", "start_label", "target_label", *common]
    assert signature.parameters["seed"].default == 0 and "``ranks``" in investigate.counterfactual.__doc__
    assert list(inspect.signature(investigate.invert).parameters) == ["images", *common[:3], *common[4:6], *common[7:]]
    assert "seed" not in inspect.signature(investigate.word_swap).parameters
    with pytest.raises(FeatscopeError, match="unknown setting 'seed' for invert"):
        investigate.invert(["x.png"], out=tmp_path, seed=3)
    with pytest.raises(FeatscopeError, match="invert takes no solver config"):
        investigate.invert(["x.png"], out=tmp_path, config=EndToEndConfig())


def test_the_command_line_selects_images_from_a_dataset_folder(tmp_path):
    from featscope.cli.options import selected_images
    from featscope.datasets import ClassFolderDataset

    for shape in ("circle", "square"):
        (tmp_path / shape).mkdir()
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / shape / f"{i}.png")
    plain = argparse.Namespace(images=["a.png", "b.png"], class_names=None, classes=None, images_per_class=None)
    assert selected_images(plain) == ["a.png", "b.png"]
    chosen = selected_images(argparse.Namespace(**{**vars(plain), "images": [str(tmp_path)], "classes": "square",
                                                   "images_per_class": 1}))  # fmt: skip
    assert isinstance(chosen, ClassFolderDataset) and [e.path.name for e in chosen] == ["0.png"]
    with pytest.raises(FeatscopeError, match="select from one dataset folder"):
        selected_images(argparse.Namespace(**{**vars(plain), "classes": "square"}))
