"""The command line: the happy path and every user mistake (one line, exit code 2).

Commands run in-process through ``featscope.cli.main`` (exit code, stdout, stderr and the one-line warnings it
formats), which checks what a subprocess would without paying a Python + torch start-up per call; one subprocess
smoke test (``python -m featscope.cli decode --help``) keeps the entry point itself covered."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

TESTS = Path(__file__).parent
FAST = ["--steps", "4", "-K", "1", "--quiet"]


@pytest.fixture
def featscope(featscope_main):
    """``featscope ARGS`` in-process (see conftest.featscope_main)."""
    return featscope_main


def featscope_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "featscope.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(root / "target.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    save_file({"weight": torch.randn(4, 4)}, str(root / "random.safetensors"))
    torch.save(torch.zeros(7), root / "wrong_shape.pt")
    return root


def test_help_teaches_the_paper_symbols(workdir):
    result = featscope_process("decode", "--help", cwd=workdir)  # the one subprocess: the entry point itself
    assert result.returncode == 0
    for symbol in ("w_g", "K", "T - T'", "grad_thres", "--preset", "reference", "--seed", "--num-samples"):
        assert symbol in result.stdout, symbol


def test_decode_encode_and_layers_end_to_end(featscope, workdir, tiny_pixel_folder):
    models = ["--backbone", f"pixel:{tiny_pixel_folder}", "--extractor", "tiny_nets:tiny_cnn"]
    result = featscope("decode", "--target", "target.png", "--out", "runs/ok", *models, *FAST, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "best distance" in result.stdout
    metrics = json.loads((workdir / "runs/ok/metrics.json").read_text())
    assert metrics["summary"]["samples"] == 1

    encoded = featscope(
        "encode", "target.png", "--out", "feature.safetensors", "--extractor", "tiny_nets:tiny_cnn", cwd=workdir
    )
    assert encoded.returncode == 0, encoded.stderr
    from_feature = featscope(
        "decode", "--target", "feature.safetensors", "--out", "runs/feat", *models, *FAST, cwd=workdir
    )
    assert from_feature.returncode == 0, from_feature.stderr
    assert (workdir / "runs/feat/final.png").read_bytes() == (workdir / "runs/ok/final.png").read_bytes()

    layers = featscope("layers", "tiny_nets:tiny_cnn", cwd=workdir)
    assert layers.returncode == 0 and "conv1" in layers.stdout and "(8, 16, 16)" in layers.stdout


BAD_INPUTS = {
    "missing image": (["--target", "nowhere.png"], "does not exist"),
    "corrupt image": (["--target", "corrupt.png"], "cannot read image"),
    "unknown backbone": (["--target", "target.png", "--backbone", "sdxxl:foo"], "sd:"),
    "unknown extractor": (["--target", "target.png", "--extractor", "torchvisoin:resnet50"], "torchvision"),
    "unknown layer": (["--target", "target.png", "--extractor", "tiny_nets:tiny_cnn@conv9"], "conv1"),
    "text without text tower": (["--text", "a red star"], "text tower"),
    "tensor of the wrong shape": (["--target", "wrong_shape.pt"], "shape (7,)"),
    "not a diffusion checkpoint": (["--target", "target.png", "--backbone", "sd:random.safetensors"], "checkpoint"),
    "existing run folder": (["--target", "target.png", "--out", "existing"], "--overwrite"),
    "candidates without a selection step": (["--target", "target.png", "--candidates", "3"], "--select-after"),
    "backward guidance after the last step": (
        ["--target", "target.png", "--backward-steps", "5", "--backward-from", "50"],
        "--backward-from",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(featscope, case, workdir, tiny_pixel_folder):
    args, fragment = BAD_INPUTS[case]
    (workdir / "existing").mkdir(exist_ok=True)
    (workdir / "existing" / "config.yaml").write_text("x: 1\n")
    defaults = {"--backbone": f"pixel:{tiny_pixel_folder}", "--extractor": "tiny_nets:tiny_cnn", "--out": "runs/bad"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [*args, flag, value]
    result = featscope("decode", *args, *FAST, cwd=workdir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("featscope: error:"), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert not (workdir / "runs/bad").exists()
    assert not list((workdir / "runs").glob(".*partial")) if (workdir / "runs").exists() else True


@pytest.mark.parametrize(
    ("channels", "fragment"), [("32,x,96", "not a list of integers"), ("30,64,96", "multiples of 16")]
)
def test_world_train_rejects_bad_channels_in_one_line(featscope, channels, fragment, workdir):
    result = featscope("world", "train", "ddpm", "--out", "train", "--steps", "1", "--channels", channels, cwd=workdir)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
    assert not (workdir / "train").exists()


def test_world_sample_writes_images_and_records(featscope, workdir):
    result = featscope("world", "sample", "-n", "3", "--out", "world", "--shape", "star", cwd=workdir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (workdir / "world/records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["shape"] == "star" for r in records)
    again = featscope("world", "sample", "-n", "3", "--out", "world", cwd=workdir)
    assert again.returncode == 2 and "overwrite" in again.stderr


def test_world_default_warns_about_a_resized_target(featscope, workdir):
    Image.new("RGB", (64, 48), (20, 20, 20)).save(workdir / "big.png")
    result = featscope(
        "decode", "--target", "big.png", "--out", "runs/world", "--steps", "2", "-K", "1", "--quiet", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert "featscope: warning: target 'big.png' is 64x48; resized to 32x32 for world:shape-net" in result.stderr
    assert yaml_backbone(workdir / "runs/world/config.yaml") == "world:ddpm"


def yaml_backbone(path: Path) -> str:
    import yaml

    return yaml.safe_load(path.read_text())["backbone"]


# -- the parser itself: derived options, help on every option, a light top level --------------------
def _parsers(parser: argparse.ArgumentParser, path: str = "featscope"):
    """Every parser under ``parser`` (sub-commands and theirs), with its command line."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line in {path} --help"
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_a_help_line():
    from featscope.cli import build_parser

    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and not re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()  # more than its default
    ]
    assert not missing, missing


def test_solver_options_are_derived_from_the_settings_dataclasses():
    from featscope.cli import build_parser
    from featscope.settings import knob_of
    from featscope.solvers.configs import EndToEndConfig, UniversalConfig, WordSwapConfig

    parsers = dict(_parsers(build_parser()))
    for path, cls, excluded in [
        ("featscope decode", UniversalConfig, ()),
        ("featscope bench decode", UniversalConfig, ("prompt", "guidance_scale", "stop_distance")),
        ("featscope investigate difference", EndToEndConfig, ()),
        ("featscope investigate neuron", EndToEndConfig, ()),
        ("featscope investigate counterfactual", EndToEndConfig, ()),
        ("featscope investigate word-swap", WordSwapConfig, ()),
        ("featscope bench investigate", EndToEndConfig, ()),
    ]:
        options = {a.dest: a for a in parsers[path]._actions}
        for f in dataclasses.fields(cls):
            knob = knob_of(f)
            if not knob.cli or f.name in excluded:
                assert f.name not in options, (path, f.name)
                continue
            flag = knob.flag or "--" + f.name.replace("_", "-")
            assert {flag, *knob.aliases} <= set(options[f.name].option_strings), (path, f.name)
            assert options[f.name].default is None  # unset: the preset's value
    decode = {s for a in parsers["featscope decode"]._actions for s in a.option_strings}
    assert {"--steps", "--wg", "--guidance-weight", "-K", "--recurrence", "--prompt", "--stop-distance"} <= decode


def test_featinv_options_come_from_its_train_and_sample_settings():
    from featscope.cli import build_parser
    from featscope.cli.featinv import _settings, _train_config
    from featscope.featinv.config import WORLD_TRAIN, SampleSettings, TrainConfig

    def parse(*args):
        return build_parser("featinv").parse_args(["featinv", *args])

    plain = parse("reconstruct", "--out", "o")
    assert _settings(plain) == SampleSettings()
    tuned = parse("reconstruct", "--out", "o", "--steps", "7", "--strength", "0.5", "--seed", "3", "--prompt", "p")
    assert _settings(tuned) == SampleSettings(num_steps=7, conditioning_scale=0.5, seed=3, prompt="p")
    train = ["train", "--model", "m", "--world", "4", "--out", "o"]
    assert _train_config(parse(*train), TrainConfig()) == TrainConfig()
    changed = parse(*train, "--steps", "9", "--no-flip", "--cache-features", "--mixed-precision", "bf16")
    assert _train_config(changed, TrainConfig()) == TrainConfig(
        steps=9, flip=False, cache_features=True, mixed_precision="bf16"
    )
    assert _train_config(parse("world", "--out", "o"), WORLD_TRAIN) == WORLD_TRAIN


def test_the_help_of_every_command_imports_no_model_library():
    commands = ["", "decode", "investigate", "bench", "featinv", "batch", "world"]
    code = f"import sys; from featscope.cli import build_parser; [build_parser(c) for c in {commands}]; "
    code += "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
