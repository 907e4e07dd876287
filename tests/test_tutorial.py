"""examples/tutorial.ipynb runs top to bottom on the embedded world, and what it computes holds: the shape network's
decode keeps the star's shape, the counterfactual reports its classifier confidences, the study's report exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import featscope

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "examples" / "tutorial.ipynb"
KERNEL = "python3"


def _kernel_spec_path(tmp_path: Path) -> str | None:
    """A JUPYTER_PATH entry holding ipykernel's ``python3`` kernel for this interpreter when no spec is found (None
    when one is): written from the installed ipykernel, nothing is downloaded."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
        return None
    except NoSuchKernel:
        from ipykernel.kernelspec import write_kernel_spec

        root = tmp_path / "jupyter"
        write_kernel_spec(str(root / "kernels" / KERNEL))  # argv: this sys.executable -m ipykernel_launcher
        return str(root)


@pytest.mark.slow  # about 1-2 minutes on 2 cores; CI runs it (the marker only lets `-m "not slow"` skip it)
def test_the_tutorial_notebook_runs_and_its_results_hold(tmp_path, monkeypatch):
    stored = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code), "strip the outputs"

    work = tmp_path / "work"  # the notebook's working folder: it writes runs/tutorial/ here
    work.mkdir()
    monkeypatch.setenv("FEATSCOPE_EXAMPLES", str(REPO / "examples"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: one thread, as the suite's own processes
    here = str(Path(featscope.__file__).resolve().parents[1])  # the kernel imports the featscope under test
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    extra = _kernel_spec_path(tmp_path)
    if extra is not None:
        monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [extra, os.environ.get("JUPYTER_PATH")])))

    client = nbclient.NotebookClient(
        stored, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # a failing cell raises CellExecutionError with its traceback

    outputs = "".join(o.get("text", "") for cell in stored.cells if cell.cell_type == "code" for o in cell.outputs)
    assert f"featscope {featscope.__version__} | target: {REPO / 'examples' / 'yellow-star.png'}" in outputs
    out = work / "runs" / "tutorial"

    # part 1: the shape network keeps the star, per the oracle's readings recorded by decode
    for net in ("shape-net", "color-net"):
        samples = json.loads((out / "decode" / net / "metrics.json").read_text())["samples"]
        assert len(samples) == 2 and all("world-oracle" in s["readings"] for s in samples)
    samples = json.loads((out / "decode" / "shape-net" / "metrics.json").read_text())["samples"]
    readings = [s["readings"]["world-oracle"] for s in samples]
    assert readings[0]["target"]["shape"] == "star"
    assert any(r["valid"] and r["decoded"]["shape"] == "star" for r in readings), readings
    assert "seed 0: kept" in outputs and "classifier flipped:" in outputs

    # part 2: the counterfactual's item folder and its confidences
    item = out / "counterfactual" / "yellow-star_to_circle"
    assert {"best.png", "sheet.png", "target.png", "metrics.json"} <= {p.name for p in item.iterdir()}
    metrics = json.loads((item / "metrics.json").read_text())
    target = metrics["confidence"]["target_class"]
    assert metrics["target_class"] == "circle" and 0.0 <= target["before"] <= 1.0 and 0.0 <= target["after"] <= 1.0
    assert f"P(circle): {target['before']:.3f} -> {target['after']:.3f}" in outputs

    # part 3: the study's four jobs are done and the report is written
    summary = json.loads((out / "study" / "summary.json").read_text())
    assert summary["jobs"] == 4 and summary["done"] == 4 and not summary["failed"]
    report = out / "study" / "report.html"
    assert report.is_file() and "<img" in report.read_text()
