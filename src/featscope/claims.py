"""Job claims on a shared folder: processes take unfinished jobs as they free up, and retake a dead one's.

A claim is a file ``<folder>/.claims/<job>.claim`` created with ``O_CREAT | O_EXCL`` (one winner), holding the
owner's host and pid; a thread refreshes its modification time while the job runs (the lease). A claim is
stale when its owner's process is gone (same host) or its lease has not been refreshed for ``lease_seconds``
(any host): such a claim is taken over by renaming it away (one winner) and claiming anew.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LEASE_SECONDS = float(os.environ.get("FEATSCOPE_CLAIM_LEASE", "120"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """The claims of one study folder, held by this process."""

    def __init__(self, folder: Path, owner: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.folder = Path(folder) / ".claims"
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()

    def _path(self, job: str) -> Path:
        return self.folder / f"{job}.claim"

    def _create(self, path: Path) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        record = {"owner": self.owner, "host": self.host, "pid": os.getpid(), "time": time.time()}
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record))
        except OSError as error:  # a full disk: a half-written claim would hold the job for ever
            path.unlink(missing_ok=True)
            error.filename = error.filename or str(path)
            raise
        return True

    def is_stale(self, job: str) -> bool:
        """Whether ``job``'s claim belongs to a process that is gone (or whose lease ran out)."""
        path = self._path(job)
        try:
            age = time.time() - path.stat().st_mtime
            record = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return False
        except (OSError, json.JSONDecodeError):  # being written right now
            return False
        if record.get("host") == self.host and isinstance(record.get("pid"), int):
            return not _pid_alive(record["pid"]) or age > self.lease_seconds
        return age > self.lease_seconds

    def take(self, job: str) -> bool:
        """Claim ``job``: True when this process now holds it (a stale claim is taken over)."""
        path = self._path(job)
        if self._create(path):
            return True
        if not self.is_stale(job):
            return False
        try:
            os.replace(path, path.with_name(f"{path.name}.{self.owner}.stale"))  # one process wins the rename
        except FileNotFoundError:
            return False
        path.with_name(f"{path.name}.{self.owner}.stale").unlink(missing_ok=True)
        return self._create(path)

    def release(self, job: str) -> None:
        self._path(job).unlink(missing_ok=True)

    @contextmanager
    def held(self, job: str) -> Iterator[None]:
        """Refresh the claim's lease while the body runs, then release it."""
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(self.lease_seconds / 4):
                try:
                    os.utime(self._path(job))
                except FileNotFoundError:
                    return

        thread = threading.Thread(target=refresh, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(job)

    def tidy(self) -> None:
        """Remove the claims folder when no claim is left in it."""
        try:
            self.folder.rmdir()
        except OSError:
            pass
