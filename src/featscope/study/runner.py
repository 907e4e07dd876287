"""Running a study: this rank's jobs one after another, skipping done ones, recording failures; then the summary."""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from featscope.errors import FeatscopeError
from featscope.investigate.common import Ranks, join_ranks, rank_device
from featscope.runs import atomic_write_json
from featscope.study.log import StudyLog
from featscope.study.methods import METHODS
from featscope.study.plan import Job, Study, load_study
from featscope.study.summary import ERROR_NAME, write_summary


@dataclass
class StudyResult:
    """What a study call did: the checked study, the summary (rank 0 only), and this rank's failed jobs."""

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
    """Run every job of a study (YAML file, dict or :class:`Study`) not done yet, on this process's share.

    Under torchrun, job i runs on rank i % world size; a job whose folder has ``metrics.json`` is skipped
    (resume); a failing job leaves ``error.json`` and the others go on. After a barrier, rank 0 writes
    ``summary.json`` and ``summary.md``. ``out`` and ``device`` replace the study's own.
    """
    plan = study if isinstance(study, Study) else load_study(study, out=out)
    ranks = _planned_ranks(plan)
    if plan.out.exists() and not plan.out.is_dir():
        raise FeatscopeError(f"study output {str(plan.out)!r} is a file; choose a folder with out:")
    plan.out.mkdir(parents=True, exist_ok=True)
    log = StudyLog(plan.out, ranks.rank)
    job_device = rank_device(device or plan.device, ranks)
    mine = [job for job in plan.jobs if ranks.mine(job.index)]
    log.event("study_start", study=plan.name, jobs=len(mine), world=ranks.world, pid=os.getpid())
    failed = []
    desc = f"study {plan.name}" + (f" [rank {ranks.rank}]" if ranks.world > 1 else "")
    with tqdm(total=len(mine), desc=desc, unit="job", disable=quiet, dynamic_ncols=True) as bar:
        for job in mine:
            if not _run_job(plan.out, job, job_device, log, ranks, quiet):
                failed.append(job.job_id)
            bar.update()
    log.event("study_end", study=plan.name, failed=len(failed))
    joined = join_ranks()  # torchrun: the process group of the barrier; alone: a world of one
    try:
        joined.barrier()
        summary = write_summary(plan) if joined.rank == 0 else None
    finally:
        joined.close()
    return StudyResult(plan, summary, failed)


def _planned_ranks(plan: Study) -> Ranks:
    """This process's rank, read without joining a process group (the jobs of featscope.investigate join
    their own, as a world of one); the group for the final barrier is joined after the jobs."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        ranks = Ranks(dist.get_rank(), dist.get_world_size())
        if ranks.world > 1 and any(METHODS[job.method].items for job in plan.jobs):
            raise FeatscopeError(
                "a study with investigate methods joins the torchrun ranks itself: call run_study before "
                "torch.distributed.init_process_group"
            )
        return ranks
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if not 0 <= rank < world:
        raise FeatscopeError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Ranks(rank, world)


def _run_job(out: Path, job: Job, device: str, log: StudyLog, ranks: Ranks, quiet: bool) -> bool:
    """Run one job into ``out/<job id>``; False when it failed (its error.json and log line say why)."""
    folder = out / job.job_id
    if (folder / "metrics.json").is_file():
        log.event("skip", job=job.job_id, index=job.index)
        _say(f"[rank {ranks.rank}] {job.job_id}: already done, skipped", quiet)
        return True
    log.event("start", job=job.job_id, index=job.index, method=job.method)
    tic = time.time()
    try:
        METHODS[job.method].run(job.params, job.settings, folder, device, quiet)
    except Exception as error:  # one failing job (a user mistake or a bug) must not stop the others
        seconds = round(time.time() - tic, 3)
        message = f"{type(error).__name__}: {error}" if not isinstance(error, FeatscopeError) else str(error)
        record = {"job": job.job_id, "method": job.method, "rank": ranks.rank, "wall_seconds": seconds}
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
