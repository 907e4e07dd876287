"""Session fixtures: tiny random-weight diffusion models saved in their real on-disk formats (see tiny_sd.py)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featscope.backbones import Backbone, load_backbone
from tiny_sd import save_single_file, save_tiny_pixel, save_tiny_sd


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One intra-op thread: the test models are tiny, and on a shared, loaded machine two threads mostly wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """All tiny model files, written once per session."""
    root = tmp_path_factory.mktemp("tiny_models")
    pipe = save_tiny_sd(root / "sd")
    return {
        "sd": root / "sd",
        "safetensors": save_single_file(pipe, root / "sd-tiny.safetensors"),
        "ckpt": save_single_file(pipe, root / "sd-tiny.ckpt"),
        "pixel": save_tiny_pixel(root / "pixel", conditional=False),
        "pixel_text": save_tiny_pixel(root / "pixel-text", conditional=True),
    }


@pytest.fixture(scope="session")
def tiny_sd_folder(tiny_models) -> Path:
    """A diffusers Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    return tiny_models["sd"]


@pytest.fixture(scope="session")
def tiny_sd_single_file(tiny_models) -> Path:
    """The same weights as one original-LDM ``.safetensors`` checkpoint (load with ``config=tiny_sd_folder``)."""
    return tiny_models["safetensors"]


@pytest.fixture(scope="session")
def tiny_sd_ckpt(tiny_models) -> Path:
    """The same weights as a Lightning-style ``.ckpt`` (``{"state_dict": ..., "callbacks": ...}``)."""
    return tiny_models["ckpt"]


@pytest.fixture(scope="session")
def tiny_pixel_folder(tiny_models) -> Path:
    """An unconditional pixel model (UNet2DModel, 16 px) in DDPMPipeline's folder layout."""
    return tiny_models["pixel"]


@pytest.fixture(scope="session")
def tiny_pixel_text_folder(tiny_models) -> Path:
    """A caption-conditioned pixel model (UNet2DConditionModel, 16 px) with a featscope text_encoder/."""
    return tiny_models["pixel_text"]


@pytest.fixture(scope="session")
def tiny_sd_backbone(tiny_sd_folder) -> Backbone:
    """A loaded tiny SD Backbone on CPU, shared by the session: do not modify it."""
    return load_backbone(f"sd:{tiny_sd_folder}")


@pytest.fixture(scope="session")
def tiny_pixel_text_backbone(tiny_pixel_text_folder) -> Backbone:
    """A loaded caption-conditioned tiny pixel Backbone on CPU, shared by the session: do not modify it."""
    return load_backbone(f"pixel:{tiny_pixel_text_folder}")


@pytest.fixture(scope="session")
def target_png(tmp_path_factory) -> Path:
    """A 16x16 noise image to decode."""
    path = tmp_path_factory.mktemp("targets") / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(path)
    return path


@dataclass
class Result:
    """What a ``featscope`` command left: its exit code, stdout and stderr."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def featscope_main(capsys, monkeypatch):
    """``featscope ARGS`` in-process, in ``cwd``: its exit code, stdout and stderr (with the warnings it printed).

    Warnings are recorded (pytest would otherwise swallow them) and formatted with ``warnings.formatwarning`` as
    ``main`` left it, i.e. exactly the lines the command writes to stderr in its own process. An uncaught exception
    propagates and fails the test, as a traceback would."""
    from featscope.cli import main

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main replaces it; restored after

    def run(*args: str, cwd: Path | None = None) -> Result:
        capsys.readouterr()
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            patch.chdir(cwd or Path.cwd())
            warnings.simplefilter("default")  # a fresh interpreter's filters: each warning once, these ignored
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            try:
                code = main(list(args))
            except SystemExit as exit:  # argparse: --help, or a usage error
                code = exit.code if isinstance(exit.code, int) else 1
        out, err = capsys.readouterr()
        err += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
        return Result(code, out, err)

    return run


@pytest.fixture(scope="session")
def world():
    """The shipped world:ddpm and world:shape-net@fc on the CPU."""
    from featscope.extractors import load_extractor

    return load_backbone("world:ddpm", device="cpu"), load_extractor("world:shape-net@fc", device="cpu")
