"""investigate (difference, neuron, counterfactual) and invert: item folders, datasets, sharding, resume, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featscope import investigate
from featscope.datasets import ClassFolderDataset
from featscope.errors import FeatscopeError
from featscope.investigate.masks import scaled_steps
from featscope.world.render import generate
from shared_inputs import save_world_image

TESTS = Path(__file__).parent
TINY = ["--steps", "3", "--iterations", "1", "--cutouts", "1", "--device", "cpu", "--quiet"]
TINY_API = {"num_steps": 3, "iterations": 1, "cutouts": 1, "device": "cpu", "quiet": True}
ITEM_FILES = {
    "initial.png",
    "best.png",
    "final.png",
    "strip.png",
    "loss.png",
    "sheet.png",
    "metrics.json",
    "config.yaml",
    "log.jsonl",
}


def _env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }


def featscope(*args: str, cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(launcher or []), "-m", "featscope.cli", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


def _save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A class-per-folder dataset of world shapes (two images per class), one loose image with a caption."""
    root = tmp_path_factory.mktemp("investigate")
    for shape in ("circle", "square"):
        pixels, _ = generate(2, seed=3, shape=shape)
        for i, image in enumerate(pixels):
            _save(root / "shapes" / shape / f"img{i}.png", image)
    (root / "names.tsv").write_text("circle\tround thing\nsquare\tbox\n")
    save_world_image(root / "square.png", seed=5, shape="square")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "bad_mask.png")
    return root


# -- datasets -------------------------------------------------------------------------------------
def test_class_folder_dataset_order_names_and_selection(world):
    data = ClassFolderDataset(world / "shapes")
    assert data.classes == ["circle", "square"]
    assert [(it.class_dir, it.path.name, it.class_index) for it in data] == [
        ("circle", "img0.png", 0),
        ("circle", "img1.png", 0),
        ("square", "img0.png", 1),
        ("square", "img1.png", 1),
    ]
    named = ClassFolderDataset(world / "shapes", class_names=world / "names.tsv", classes=["box"], images_per_class=1)
    assert [(it.class_name, it.item_id) for it in named] == [("box", "square_img0")]
    (world / "names.txt").write_text("round\nbox\n")  # one name per line, in folder order
    assert ClassFolderDataset(world / "shapes", class_names=world / "names.txt").classes == ["round", "box"]
    assert [it.class_dir for it in ClassFolderDataset(world / "shapes", classes=["square", "circle"])][::2] == [
        "square",
        "circle",
    ]
    with pytest.raises(FeatscopeError, match="did you mean square"):
        ClassFolderDataset(world / "shapes", classes=["sqare"])
    with pytest.raises(FeatscopeError, match="did you mean shapes"):
        ClassFolderDataset(world / "shape")


def test_mask_post_processing_and_size_check(world):
    mask = investigate.load_mask(world / "mask.png", None, (32, 32))
    assert mask.shape == (1, 1, 32, 32) and mask.sum() == 256
    eroded = investigate.postprocess_mask(mask, ["erosion_3"])
    dilated = investigate.postprocess_mask(mask, ["dilation_5"])
    blurred = investigate.postprocess_mask(mask, ["blur_5_2"])
    assert eroded.sum() == 14 * 14 and dilated.sum() == 20 * 20
    assert 0 < blurred[0, 0, 8, 16] < 1 and torch.isclose(blurred.sum(), mask.sum(), rtol=0.02)
    with pytest.raises(FeatscopeError, match="20x20"):
        investigate.load_mask(world / "bad_mask.png", (64, 64), (32, 32))
    with pytest.raises(FeatscopeError, match="unknown mask post-processing"):
        investigate.postprocess_mask(mask, ["open_3"])


def test_the_published_post_processing_scales_with_the_image():
    """DiG-IN's erosion 3, dilation 20, blur 45/30 are sizes on 512 px images: ``published`` scales them."""
    assert scaled_steps(512) == ["erosion_3", "dilation_20", "blur_45_30"]
    assert scaled_steps(32) == ["blur_3_1.875"]  # erosion and dilation round below 2 px: left out
    assert scaled_steps(64) == ["dilation_2", "blur_7_3.75"]
    square = torch.zeros(1, 1, 64, 64)
    square[..., 16:48, 16:48] = 1
    published = investigate.postprocess_mask(square, ["published"])
    assert torch.equal(published, investigate.postprocess_mask(square, ["dilation_2", "blur_7_3.75"]))
    assert published[0, 0, 15, 32] > 0.4 and published[0, 0, 32, 32] == 1  # grown by a pixel, then softened


# -- the API on the embedded world ---------------------------------------------------------------
def _item(out: Path, name: str) -> tuple[set[str], dict]:
    folder = out / name
    return {p.name for p in folder.iterdir()}, json.loads((folder / "metrics.json").read_text())


def test_counterfactual_from_a_real_image_with_a_mask(world, tmp_path):
    out = tmp_path / "cf"
    summary = investigate.counterfactual(
        "world:shape-net@fc",
        [world / "square.png"],
        "square",
        "circle",
        out=out,
        mask=world / "mask.png",
        mask_postprocess=["dilation_3"],
        inner_steps=2,
        **TINY_API,
    )
    files, metrics = _item(out, "square_to_circle")
    assert ITEM_FILES | {"target.png", "mask.png"} <= files
    assert metrics["prompt"] == (world / "square.txt").read_text()  # the caption beside the image
    conf = metrics["confidence"]["target_class"]
    assert len(conf["per_iteration"]) == 2 and conf["after"] == conf["per_iteration"][metrics["best_iteration"]]
    assert {"latent_background_l2", "px_background_l2", "total"} <= set(metrics["losses"])
    assert metrics["distance_to_image"]["l2_before"] >= 0
    log = [json.loads(line) for line in (out / "square_to_circle" / "log.jsonl").read_text().splitlines()]
    assert [e["losses"]["total"] for e in log[:-1]] == metrics["losses"]["total"]  # one line per iteration
    assert summary["done"] == 1 and summary["missing"] == []
    assert (out / "summary.md").read_text().count("square_to_circle") == 1

    # a dataset folder: the start class is the image's folder; the template makes the prompt
    out = tmp_path / "cf-dataset"
    investigate.counterfactual(
        "world:shape-net@fc", ClassFolderDataset(world / "shapes", classes=["circle"], images_per_class=1),
        target_label="square", out=out, regularizers=["pixel_l2"], regularizer_weights=[10.0], inner_steps=1,
        **TINY_API,
    )  # fmt: skip
    files, metrics = _item(out, "circle_img0_to_square")
    assert metrics["start_class"] == "circle" and metrics["prompt"] == "circle"
    assert "mask.png" in files and "attention.png" in files  # no --mask: the world's cross-attention default


def test_an_interrupted_item_leaves_nothing_that_looks_done(tmp_path):
    from featscope.orchestration import Item, run_items
    from featscope.ranks import Ranks

    def work(run, item):
        run.write_json("partial.json", {"started": True})
        if item.item_id == "b":
            raise KeyboardInterrupt
        return {"value": 1.0}

    with pytest.raises(KeyboardInterrupt):
        run_items(tmp_path, "test", [Item("a", None), Item("b", None)], work, {}, ranks=Ranks(), headline=dict)
    assert (tmp_path / "a" / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no b, no .b.partial
    summary = run_items(tmp_path, "test", [Item("a", None)], work, {}, ranks=Ranks(1, 2), headline=dict, quiet=True)
    assert summary is None  # rank 1 leaves the summary to rank 0


def test_invert_a_dataset_class_and_neuron_with_top_images(world, tmp_path):
    out = tmp_path / "inv"
    investigate.invert(
        ClassFolderDataset(world / "shapes", classes=["square"], images_per_class=1), out=out, num_steps=3,
        inner_steps=2, device="cpu", quiet=True,
    )  # fmt: skip
    files, metrics = _item(out, "square_img0")
    inversion_files = {"x_T.pt", "null_texts.pt", "target.png", "reconstruction.png", "sheet.png", "prompt.txt"}
    inversion_files.add("metrics.json")
    assert inversion_files | {"config.yaml", "log.jsonl"} <= files
    assert torch.load(out / "square_img0" / "null_texts.pt").shape[0] == 3
    assert metrics["prompt"] == "square" and metrics["latent_mse"] >= 0

    out = tmp_path / "neuron"
    investigate.neuron("world:shape-net@fc", None, [1], out=out, images_folder=world / "shapes", top_k=2, **TINY_API)
    files, metrics = _item(out, "neuron1_s0")
    assert ITEM_FILES | {"top_k.png", "top_k.json"} <= files
    assert len(json.loads((out / "neuron1_s0" / "top_k.json").read_text())) == 2
    assert len(metrics["activation"]["per_iteration"]) == 2


# -- command line: two ranks, resume, user mistakes ------------------------------------------------
def test_difference_on_two_ranks_then_resume_recomputes_only_the_missing_item(tmp_path, featscope_main):
    args = ["investigate", "difference", "--net1", "world:shape-net@fc", "--net2", "world:spurious-net@fc"]
    args += ["--classes", "circle,square", "--out", "runs/diff", *TINY]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = featscope(*args, cwd=tmp_path, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "runs/diff"
    items = ["000_circle_s0", "001_square_s0"]
    for name in items:
        files, metrics = _item(out, name)
        assert ITEM_FILES <= files and metrics["confidence"]["net1"]["network"] == "world:shape-net"
    ranks = [json.loads((out / name / "log.jsonl").read_text().splitlines()[-1])["rank"] for name in items]
    assert ranks == [0, 1]  # item i on rank i % 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 2 and set(summary["results"]) == set(items)
    assert not list(out.glob(".*partial"))

    kept = (out / items[0] / "metrics.json").stat().st_mtime_ns
    shutil.rmtree(out / items[1])
    again = featscope_main(*[a for a in args if a != "--quiet"], cwd=tmp_path)  # resumed in-process, one rank
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{items[0]}: already done, skipped" in again.stdout and f"{items[1]}: done" in again.stdout
    assert (out / items[0] / "metrics.json").stat().st_mtime_ns == kept
    assert (out / items[1] / "metrics.json").is_file()
    assert json.loads((out / "summary.json").read_text())["done"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["invert", "no_such_dataset", "--quiet"], "dataset folder 'no_such_dataset' does not exist"),
        (["invert", "shapes", "--classes", "sqare", "--quiet"], "did you mean square"),
        (
            ["investigate", "counterfactual", "--net", "world:shape-net@fc", "square.png", "--start", "square",
             "--target", "circle", "--mask", "bad_mask.png", "--quiet"],
            "bad_mask.png' is 20x20 pixels",
        ),
        (
            ["investigate", "neuron", "--net", "world:shape-net@fc", "--layer", "block9", "--quiet"],
            "has no layer 'block9'",
        ),
    ],
    ids=["missing-dataset", "unknown-class", "mask-size", "unknown-layer"],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors(world, args, message, featscope_main):
    result = featscope_main(*args, cwd=world)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featscope: error:") and message in lines[0], result.stderr
