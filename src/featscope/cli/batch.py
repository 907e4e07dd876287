"""``featscope batch``: run a study: a YAML file of jobs (grid of targets, networks, seeds, settings), resumable.

Run every job of a study file not done yet. Several processes (torchrun ranks, SLURM array tasks) share the jobs:
each takes unfinished ones as it frees up, and the job of a process that died is taken again.
"""

from __future__ import annotations

import argparse
import sys

from featscope.cli.options import add_device, add_output, add_quiet

EPILOG = """\
examples:
  featscope batch examples/study.yaml                          # one process; a re-run resumes
  featscope batch examples/study.yaml --dry-run                # check the file, list the jobs
  torchrun --standalone --nproc-per-node 4 -m featscope.cli batch study.yaml   # ranks share the jobs

Each job writes OUT/<job>/ (the run folder of its method); a job whose folder has metrics.json is skipped,
a failed one leaves OUT/<job>/error.json. OUT/study.jsonl logs every job's start and end; OUT/summary.json
and OUT/summary.md cover all jobs. Keys of the study file: docs/batch-and-report.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add ``batch``: the study file, its output folder and device, a dry run and the report."""
    p.add_argument("study", metavar="STUDY.yaml", help="the study file (keys: docs/batch-and-report.md)")
    add_output(p, "output folder (default: the study's out:)", required=False)
    add_device(p, default=None)
    p.add_argument("--dry-run", action="store_true", help="check the study and list its jobs; run nothing")
    p.add_argument("--report", action="store_true", help="write OUT/report.html at the end")
    add_quiet(p, "progress bars or job lines")


def run(args: argparse.Namespace) -> int:
    """Run the study's jobs not done yet (or list them) and print its summary; 1 when a job failed."""
    from featscope.study import load_study, run_study

    study = load_study(args.study, out=args.out)
    if args.dry_run:
        for job in study.jobs:
            print(f"{job.index:4d}  {job.job_id}")
        print(f"{len(study.jobs)} jobs into {study.out}/")
        return 0
    result = run_study(study, device=args.device, quiet=args.quiet)
    if result.summary is None:  # not rank 0: rank 0 reports for everyone
        return 0
    print((study.out / "summary.md").read_text())
    if args.report:
        from featscope.report import write_report

        print(f"wrote {write_report(study.out)}")
    failed = result.summary["failed"]
    print(f"wrote {study.out}/ ({result.summary['done']} of {len(study.jobs)} jobs done; summary.json, summary.md)")
    if failed:
        print(f"featscope: {len(failed)} job(s) failed: {', '.join(failed)} (see their error.json)", file=sys.stderr)
        return 1
    return 0
