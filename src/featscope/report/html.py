"""One self-contained HTML page of runs: images as data URIs, curves as inline SVG, a sortable table, no fetches."""

from __future__ import annotations

import base64
import io
import json
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from PIL import Image

from featscope.report.plots import panels, svg

if TYPE_CHECKING:  # html renders what folders reads; folders imports html for Run._repr_html_
    from featscope.report.folders import Run, RunSet

DISPLAY = 128  # small images are shown scaled up to about this many pixels, pixelated
THUMB = 48
SKIP_KEYS = {"per_iteration", "seed", "index", "samples"}

STYLE = """
.fs{font:14px/1.4 system-ui,sans-serif;color:#222}
.fs table{border-collapse:collapse;margin:8px 0}
.fs th,.fs td{border:1px solid #ccc;padding:3px 6px;text-align:right}
.fs td:first-child,.fs th:first-child{text-align:left;white-space:nowrap}
.fs table.sortable th{cursor:pointer;background:#f3f3f3;user-select:none}
.fs th[data-dir=asc]::after{content:" \\25B2"}.fs th[data-dir=desc]::after{content:" \\25BC"}
.fs img{image-rendering:pixelated;max-width:100%}
.fs figure{display:inline-block;margin:4px 8px 4px 0;text-align:center;vertical-align:top}
.fs figcaption{font-size:11px;color:#555}
.fs section{border-top:2px solid #ddd;margin-top:18px;padding-top:6px}
.fs .done{color:#176317}.fs .failed{color:#b00020}.fs .missing,.fs .running{color:#8a6d00}
.fs pre{background:#f7f7f7;padding:6px;overflow-x:auto;font-size:12px}
.fs .strip figure{margin-right:2px}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = th.dataset.dir !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      var key = function (row) {
        var cell = row.cells[col], v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
        var n = parseFloat(v);
        return v === '' ? null : (isNaN(n) ? v : n);
      };
      var body = table.tBodies[0];
      Array.from(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return (x === null) - (y === null); }
        var r = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
        return asc ? r : -r;
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def data_uri(path: Path, max_side: int = 256) -> tuple[str, int, int]:
    """A PNG as a ``data:`` URI (shrunk to ``max_side`` when larger) and its width and height."""
    with Image.open(path) as image:
        image.load()
        if max(image.size) > max_side:
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        size = image.size
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), size[0], size[1]


def figure(path: Path, caption: str, max_side: int = 256, display: int = DISPLAY) -> str:
    uri, w, h = data_uri(path, max_side)
    scale = max(1, display // max(w, h))
    return (
        f'<figure><img src="{uri}" width="{w * scale}" height="{h * scale}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def numbers(metrics: dict | None) -> dict[str, float]:
    """The scalar numbers of a metrics.json (a decode run's ``summary``), nested keys joined with dots."""
    if not metrics:
        return {}
    if isinstance(metrics.get("summary"), dict):
        metrics = metrics["summary"]
    found: dict[str, float] = {}

    def walk(value, prefix: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in SKIP_KEYS:
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[prefix] = value

    walk(metrics, "")
    return found


def _cell(value) -> str:
    if value is None:
        return '<td data-v=""></td>'
    if isinstance(value, float):
        return f'<td data-v="{value!r}">{value:.4g}</td>'
    return f'<td data-v="{escape(str(value))}">{escape(str(value))}</td>'


def _thumb(run: Run, max_side: int) -> str:
    path = run.result_image()
    if path is None:
        return ""
    uri, w, h = data_uri(path, max_side)
    scale = max(THUMB / max(w, h), 0.01)
    return f'<img src="{uri}" width="{round(w * scale)}" height="{round(h * scale)}" alt="{escape(path.stem)}">'


def metrics_table(runs: list[Run], max_side: int = 256) -> str:
    """The sortable table: one row per run (status, rank, seconds, its numbers) with a thumbnail."""
    rows = {run.name: numbers(run.metrics) for run in runs}
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    head = ["run", "image", "method", "status", "rank", "seconds", *columns]
    lines = ['<table class="sortable metrics"><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)]
    lines.append("</tr></thead><tbody>")
    for run in runs:
        cells = [
            f'<td data-v="{escape(run.name)}"><a href="#run-{escape(run.name)}">{escape(run.name)}</a></td>',
            f'<td data-v="">{_thumb(run, max_side)}</td>',
            _cell(run.method),
            f'<td class="{run.status}" data-v="{run.status}">{run.status}</td>',
            _cell(run.rank),
            _cell(run.seconds),
            *(_cell(rows[run.name].get(c)) for c in columns),
        ]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def readings(metrics: dict | None) -> list[str]:
    """``sample: summary`` of every reader's reading in a decode run's metrics (what the world oracle saw kept);
    an investigation item's verdict, what the oracle read changed and its reconstruction error."""
    lines = [] if not (metrics or {}).get("verdict") else [_verdict(metrics)]
    for sample in (metrics or {}).get("samples", []):
        for reading in sample.get("readings", {}).values():
            if reading.get("summary"):
                lines.append(f"{sample.get('name', '')}: {reading['summary']}")
    return lines


def _verdict(metrics: dict) -> str:
    """``verdict: clean | changed: shape | reconstruction L2 0.012 (threshold 0.05)``."""
    parts = [f"verdict: {metrics['verdict']}"]
    change = metrics.get("minimality")
    if change:
        parts.append(f"changed: {', '.join(change['changed']) or 'nothing'} (minimal: {change['minimal']})")
    recon = metrics.get("reconstruction") or {}
    if "l2" in recon:
        parts.append(f"reconstruction L2 {recon['l2']:.3f} (threshold {recon.get('threshold')})")
    return " | ".join(parts)


def run_section(run: Run, max_side: int = 256) -> str:
    """One run: its images, strips of intermediates, curves, error, config and metrics (collapsible)."""
    parts = [f'<section id="run-{escape(run.name)}"><h2>{escape(run.name)} <small class="{run.status}">'
             f"{run.status}</small></h2>"]  # fmt: skip
    if run.error:
        parts.append(f'<pre class="failed">{escape(run.error)}</pre>')
    parts += [f'<p class="reading">{escape(line)}</p>' for line in readings(run.metrics)]
    images = run.images()
    if images:
        parts.append("<div>" + "".join(figure(p, p.stem, max_side) for p in images) + "</div>")
    for sample, frames in run.steps().items():
        strip = "".join(figure(p, f"step {step}", max_side, display=64) for step, p in frames)
        parts.append(f'<h3>intermediates, sample {sample}</h3><div class="strip">{strip}</div>')
    charts = panels(run)
    if charts:
        parts.append("<div>" + "".join(svg(*chart) for chart in charts) + "</div>")
    if run.config:
        text = yaml.safe_dump(run.config, sort_keys=False)
        parts.append(f"<details><summary>config.yaml</summary><pre>{escape(text)}</pre></details>")
    if run.metrics:
        text = json.dumps(run.metrics, indent=2)
        parts.append(f"<details><summary>metrics.json</summary><pre>{escape(text)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def counts(runset: RunSet) -> str:
    statuses = [run.status for run in runset.runs]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("done", "failed", "running", "missing") if s in statuses)
    times = [e["time"] for e in runset.events if isinstance(e.get("time"), (int, float))]
    span = f"; study log spans {max(times) - min(times):.1f} s" if times else ""
    return f"<p>{len(statuses)} run{'s' if len(statuses) != 1 else ''}: {counts}{span}</p>"


def page(runset: RunSet, *, title: str | None = None, max_side: int = 256) -> str:
    """The whole report page."""
    title = escape(title or f"featscope report: {runset.title}")
    sections = "\n".join(run_section(run, max_side) for run in runset.runs)
    made = time.strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body class="fs"><h1>{title}</h1>
<p>{escape(str(runset.root))} &middot; written {made}</p>
{counts(runset)}
{metrics_table(runset.runs, max_side)}
{sections}
<script>{SORT_SCRIPT}</script>
</body></html>
"""
