"""Running a study: each process takes unfinished jobs as it frees up, skipping done ones, recording failures;
then the summary."""

from __future__ import annotations

import errno
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from featscope.claims import Claims
from featscope.errors import FeatscopeError
from featscope.progress import tqdm
from featscope.ranks import Ranks, rank_device
from featscope.runs import atomic_write_json, make_folder, tidy_claim
from featscope.study.log import StudyLog
from featscope.study.methods import METHODS
from featscope.study.plan import Job, Study, load_study
from featscope.study.summary import ERROR_NAME, job_status, write_summary


@dataclass
class StudyResult:
    """What a study call did: the checked study, the summary (rank 0), and the jobs that failed in this process."""

    study: Study
    summary: dict | None
    failed: list[str]

    @property
    def out(self) -> Path:
        return self.study.out

    def _repr_html_(self) -> str:
        from featscope.report import runs_html

        return runs_html(self.study.out)


def run_study(
    study: str | Path | dict | Study,
    *,
    out: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> StudyResult:
    """Run every job of a study (YAML file, dict or :class:`Study`) not done yet, shared among processes.

    Processes of one launch (torchrun ranks, SLURM array tasks, or one process alone) take jobs as they free
    up: each first its own share (job i on rank i % world size), then any job nobody holds, through claims in
    ``out/.claims`` (:mod:`featscope.claims`); the job of a process that died is taken again. A job whose folder
    has ``metrics.json`` is skipped (resume); a failing job leaves ``error.json`` and the others go on. Once
    every job is finished, each process writes ``summary.json`` and ``summary.md`` (the same content); the
    result holds the summary on rank 0.
    ``out`` and ``device`` replace the study's own.
    """
    plan = study if isinstance(study, Study) else load_study(study, out=out)
    ranks, launch = _planned_ranks(), _launch_id()
    if plan.out.exists() and not plan.out.is_dir():
        raise FeatscopeError(f"study output {str(plan.out)!r} is a file; choose a folder with out:")
    make_folder(plan.out)
    log = StudyLog(plan.out, ranks.rank)
    job_device = rank_device(device or plan.device, ranks)
    claims = Claims(plan.out, owner=f"{launch}-{ranks.rank}")
    order = [job for job in plan.jobs if ranks.mine(job.index)] + [j for j in plan.jobs if not ranks.mine(j.index)]
    log.event("study_start", study=plan.name, jobs=len(order), world=ranks.world, pid=os.getpid(), launch=launch)
    pending = []
    for job in order:
        if job_status(plan.out / job.job_id) == "done":
            if claims.is_stale(job.job_id):  # a process killed between the job's commit and its release
                claims.release(job.job_id)
            tidy_claim(plan.out / job.job_id)
            if ranks.mine(job.index):
                log.event("skip", job=job.job_id, index=job.index)
                _say(f"[rank {ranks.rank}] {job.job_id}: already done, skipped", quiet)
        else:
            pending.append(job)
    failed = []
    desc = f"study {plan.name}" + (f" [rank {ranks.rank}]" if ranks.world > 1 else "")
    with tqdm(total=len(pending), desc=desc, unit="job", disable=quiet, dynamic_ncols=True) as bar:
        while pending:
            job = _next_job(plan.out, pending, claims, launch, bar)
            if job is None:
                time.sleep(POLL_SECONDS)  # the rest is held by live processes: wait for them (or their death)
                continue
            with claims.held(job.job_id):
                if not _run_job(plan.out, job, job_device, log, ranks, launch, quiet):
                    failed.append(job.job_id)
            pending.remove(job)
            bar.update()
    claims.tidy()
    log.event("study_end", study=plan.name, failed=len(failed))
    summary = write_summary(plan)  # by every process: the study is complete even if rank 0 died
    return StudyResult(plan, summary if ranks.rank == 0 else None, failed)


POLL_SECONDS = 0.5
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a write that fails for every job alike


def _next_job(out: Path, pending: list[Job], claims: Claims, launch: str, bar) -> Job | None:
    """The first pending job this process could claim; jobs another process finished meanwhile leave ``pending``."""
    for job in list(pending):
        if _finished(out / job.job_id, launch):
            pending.remove(job)
            bar.update()
        elif claims.take(job.job_id):
            if not _finished(out / job.job_id, launch):  # finished between the check and the claim
                return job
            claims.release(job.job_id)
            pending.remove(job)
            bar.update()
    return None


def _finished(folder: Path, launch: str) -> bool:
    """Done, or failed in this launch (a failure of an earlier launch is tried again)."""
    status = job_status(folder)
    if status == "failed":
        return json.loads((folder / ERROR_NAME).read_text()).get("launch") == launch
    return status == "done"


def _launch_id() -> str:
    """What the processes of one launch share: torchrun's run id, the SLURM array job, or this process alone."""
    for key in ("FEATSCOPE_STUDY_LAUNCH", "TORCHELASTIC_RUN_ID", "SLURM_ARRAY_JOB_ID"):
        value = os.environ.get(key)
        if value and value != "none":
            return f"{key.lower()}-{value}"
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_ARRAY_TASK_COUNT", "1"))) > 1:
        raise FeatscopeError(
            "several processes of one study need a shared launch id: start them with torchrun, as a SLURM array, "
            "or set FEATSCOPE_STUDY_LAUNCH to the same value in each"
        )
    return f"pid-{os.getpid()}"


def _planned_ranks() -> Ranks:
    """This process's rank and the number of processes: torch.distributed, torchrun's RANK/WORLD_SIZE, or a SLURM
    array's SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT (no process group is joined: claims share the work)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    if "SLURM_ARRAY_TASK_COUNT" in os.environ and "WORLD_SIZE" not in os.environ:
        world = int(os.environ["SLURM_ARRAY_TASK_COUNT"])
        rank = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0")) - int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
    else:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world:
        raise FeatscopeError(f"rank {rank} is outside a world of {world} processes (RANK/WORLD_SIZE or SLURM_ARRAY_*)")
    return Ranks(rank, world)


def _run_job(out: Path, job: Job, device: str, log: StudyLog, ranks: Ranks, launch: str, quiet: bool) -> bool:
    """Run one job into ``out/<job id>``; False when it failed (its error.json and log line say why)."""
    folder = out / job.job_id
    log.event("start", job=job.job_id, index=job.index, method=job.method)
    tic = time.time()
    try:
        METHODS[job.method].run(job.params, job.settings, folder, device, quiet)
    except Exception as error:  # one failing job (a user mistake or a bug) must not stop the others
        if isinstance(error, OSError) and error.errno in DISK_FULL:  # every later job would fail too: stop here
            raise  # (a rerun resumes)
        seconds = round(time.time() - tic, 3)
        message = f"{type(error).__name__}: {error}" if not isinstance(error, FeatscopeError) else str(error)
        record = {
            "job": job.job_id,
            "method": job.method,
            "rank": ranks.rank,
            "launch": launch,
            "wall_seconds": seconds,
        }
        atomic_write_json(folder / ERROR_NAME, {**record, "error": message, "traceback": traceback.format_exc()})
        log.event("fail", job=job.job_id, index=job.index, wall_seconds=seconds, error=message)
        _say(f"[rank {ranks.rank}] {job.job_id}: FAILED after {seconds:.1f} s: {message}", quiet)
        return False
    seconds = round(time.time() - tic, 3)
    log.event("done", job=job.job_id, index=job.index, wall_seconds=seconds)
    _say(f"[rank {ranks.rank}] {job.job_id}: done in {seconds:.1f} s", quiet)
    return True


def _say(text: str, quiet: bool) -> None:
    if not quiet:
        tqdm.write(f"featscope: {text}")
