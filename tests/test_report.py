"""featscope report: one offline HTML page, checked in headless Chromium (every image loads, the table sorts)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from featscope import investigate
from featscope.cli import main
from featscope.report import collect, write_report
from featscope.study import run_study

EXAMPLES = Path(__file__).parent.parent / "examples"

STUDY = """\
name: report
out: out
device: cpu
jobs:
  - method: decode
    targets: [yellow-star.png, blue-triangle.png]
    preset: faster
    save_every: 1
    settings: {num_steps: 3, recurrence: 1}
  - method: decode
    name: broken
    targets: corrupt.png
  - method: difference
    net1: world:shape-net@fc
    net2: world:spurious-net@fc
    classes: circle
    settings: {num_steps: 2, iterations: 1, cutouts: 1}
"""

PROBE = """<script>
window.probeErrors = [];
window.addEventListener('error', function (e) { window.probeErrors.push(String(e.message)); });
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var table = document.querySelector('table.metrics');
  var heads = Array.from(table.tHead.rows[0].cells).map(function (c) { return c.textContent; });
  var col = heads.indexOf('seconds');
  table.tHead.rows[0].cells[col].click();
  var seconds = Array.from(table.tBodies[0].rows).map(function (r) { return r.cells[col].dataset.v; });
  var out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    images: images.length,
    broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                  .map(function (i) { return i.alt; }),
    text: document.body.innerText.length,
    rows: table.tBodies[0].rows.length,
    svgs: document.querySelectorAll('svg').length,
    seconds: seconds,
    errors: window.probeErrors
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    """The Chromium executable; without one the test fails under CI and is skipped elsewhere."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def render(page: Path, work: Path) -> dict:
    """Open ``page`` (with PROBE injected) in headless Chromium; the probe's findings from the dumped DOM."""
    probe = work / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    command = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={work / 'profile'}",
               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, (result.returncode, result.stderr[-2000:])
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A finished study: two decode jobs with intermediates, one failed job, one difference job."""
    root = tmp_path_factory.mktemp("report")
    for png in EXAMPLES.glob("*.png"):
        shutil.copy(png, root / png.name)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (root / "study.yaml").write_text(STUDY)
    run_study(root / "study.yaml", quiet=True)
    return root / "study.yaml"


def test_study_report_is_self_contained_and_every_image_loads_in_chromium(study, tmp_path):
    page = write_report(study)
    assert page == study.parent / "out" / "report.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text) and "<link" not in text  # nothing to fetch
    found = render(page, tmp_path)
    assert found["errors"] == [] and found["broken"] == []
    # 2 decode runs: target, best, final, sheet, 3 intermediates, a thumbnail; difference: initial, best, final,
    # strip, loss and sheet, and a thumbnail
    assert found["images"] == 2 * (4 + 3 + 1) + 6 + 1
    assert found["rows"] == 4 and found["text"] > 200
    assert found["svgs"] == 2 * 2 + 1  # decode: distance and gradient norm; difference: its losses
    seconds = [float(s) for s in found["seconds"] if s]
    assert len(seconds) == 4 and seconds == sorted(seconds)  # the click sorted the table by seconds
    assert "cannot read image" in text and "config.yaml</summary>" in text


def test_report_of_one_run_of_an_investigation_and_from_the_command_line(study, tmp_path, capsys):
    run = study.parent / "out" / "decode-shape-net-seed0-target_yellow-star"
    page = write_report(run, tmp_path / "one.html").read_text()
    assert page.count('<tr><td data-v="decode-shape-net') == 1
    assert all(f'alt="{name}"' in page for name in ("target", "best", "final", "step 0", "step 2"))

    out = tmp_path / "neuron"
    investigate.neuron("world:shape-net@fc", None, [1, 2], out=out, num_steps=2, iterations=1, cutouts=1,
                       device="cpu", quiet=True)  # fmt: skip
    page = write_report(out).read_text()
    assert page.count('<section id="run-neuron') == 2 and "<svg" in page  # per-item folders; loss curves

    assert main(["report", str(study.parent / "out"), "--out", str(tmp_path / "cli.html")]) == 0
    assert (tmp_path / "cli.html").read_text().count("<section id=") == 4
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is neither a run folder" in capsys.readouterr().err


def _folder(path: Path, images: list[str], method: str, metrics: dict) -> None:
    path.mkdir(parents=True)
    for i, name in enumerate(images):
        Image.new("RGB", (8, 8), (30 * i, 100, 200)).save(path / name)
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.yaml").write_text(f"method: {method}\n")


def test_every_method_writes_the_one_layout_and_the_report_reads_it(tmp_path):
    """Hand-made folders in the shared layout: an investigation item, a batch decode, a FeatInv reconstruction."""
    runs = tmp_path / "runs"
    item = ["strip.png", "loss.png", "final.png", "best.png", "initial.png", "target.png", "mask.png", "attention.png"]
    _folder(runs / "counterfactual-0", item, "counterfactual", {"losses": {"total": [1.0, 0.5]}})
    batch = ["final_1.png", "final_0.png", "best_1.png", "best_0.png", "target_0.png", "target_1.png"]
    _folder(runs / "decode-batch", batch, "decode", {"summary": {"distance": 0.5}})
    _folder(runs / "featinv-reconstruct", ["sheet.png", "target_0.png", "final_0.png"], "featinv", {"seconds": 1.0})
    found = {run.name: run for run in collect(runs).runs}
    assert [p.name for p in found["counterfactual-0"].images()] == [
        "target.png", "mask.png", "initial.png", "best.png", "final.png", "attention.png", "loss.png", "strip.png"
    ]  # fmt: skip
    assert [p.name for p in found["decode-batch"].images()] == [
        "target_0.png", "target_1.png", "best_0.png", "best_1.png", "final_0.png", "final_1.png"
    ]  # fmt: skip
    assert [p.name for p in found["featinv-reconstruct"].images()] == ["target_0.png", "final_0.png", "sheet.png"]
    results = {name: run.result_image().name for name, run in found.items()}
    assert results == {
        "counterfactual-0": "best.png",
        "decode-batch": "best_0.png",
        "featinv-reconstruct": "final_0.png",
    }
    page = write_report(runs).read_text()
    thumbnails = re.findall(r'<td data-v=""><img [^>]*alt="([^"]+)">', page)
    assert thumbnails == ["best", "best_0", "final_0"]
