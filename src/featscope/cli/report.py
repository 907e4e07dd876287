"""``featscope report``: write one self-contained HTML page of a run, a folder of runs or a study.

Write an offline HTML report: target/best/final images, intermediates, curves, a sortable metrics table and each
run's config.
"""

from __future__ import annotations

import argparse

from featscope.cli.options import add_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``report``: the source, the HTML file, its title and image size."""
    p.add_argument("source", metavar="RUNS_OR_STUDY", help="a run folder, a folder of runs, or a study .yaml")
    add_output(p, "HTML file (default: report.html in the run or output folder)", metavar="FILE", required=False)
    p.add_argument("--title", help="page title")
    p.add_argument("--max-side", type=int, default=256, metavar="PX", help="shrink larger images (default: 256)")


def run(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    from featscope.report import write_report

    path = write_report(args.source, args.out, title=args.title, max_side=args.max_side)
    print(f"wrote {path}")
    return 0
