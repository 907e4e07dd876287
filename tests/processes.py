"""Child processes of the multi-process tests, each with a time bound: a hang fails the test and is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest


def child_env(**extra: str) -> dict:
    """The test's environment for a child: offline, one thread, no torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


def featscope_child(*args: str, cwd, **env: str) -> subprocess.Popen:
    """``featscope ARGS`` started in its own process (text stdout and stderr)."""
    command = [sys.executable, "-m", "featscope.cli", *args]
    return subprocess.Popen(command, cwd=cwd, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def finish(process: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The process's stdout and stderr once it exits; killed, and the test failed, after ``timeout`` seconds."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args} still ran after {timeout} s (killed); its output: {out!s:.2000} {err!s:.2000}")


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; the test fails when ``process`` exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process exited ({process.returncode}) before {what}: {out!s:.2000} {err!s:.2000}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"no {what} after {timeout} s (process killed)")
        time.sleep(0.02)


@contextmanager
def reaped(*processes: subprocess.Popen) -> Iterator[None]:
    """Kill whichever of ``processes`` still runs when the block ends: a failed test leaves no process behind."""
    try:
        yield
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
