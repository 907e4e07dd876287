"""Claims on shared folders: one process at a time holds a claim, and a dead process's claim is taken over.

A claim is a file created with ``O_CREAT | O_EXCL`` (one winner), holding the owner's host and pid; a thread
refreshes its modification time while the work runs (the lease). A claim is stale when its owner's process is
gone (same host) or its lease has not been refreshed for ``lease_seconds`` (any host): such a claim is taken
over by renaming it away (one winner) and claiming anew. :class:`Claims` holds the job claims of a study
(``<folder>/.claims/<job>.claim``); a run folder's writer holds one :class:`Claim` (:mod:`featscope.runs`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
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


class Claim:
    """The claim file ``path``, as seen by the process ``owner`` (a name unique among the claim's contenders)."""

    def __init__(self, path: Path, owner: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.path = Path(path)
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        record = {"owner": self.owner, "host": self.host, "pid": os.getpid(), "time": time.time()}
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(record))
        except OSError as error:  # a full disk: a half-written claim would hold the work for ever
            self.path.unlink(missing_ok=True)
            error.filename = error.filename or str(self.path)
            raise
        return True

    def holder(self) -> dict:
        """The holder's record (owner, host, pid, time); empty when there is no claim or it is being written."""
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}
        return record if isinstance(record, dict) else {}

    def is_stale(self) -> bool:
        """Whether the claim belongs to a process that is gone (or whose lease ran out)."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except OSError:
            return False
        record = self.holder()
        if not record:  # being written right now
            return False
        if record.get("host") == self.host and isinstance(record.get("pid"), int):
            return not _pid_alive(record["pid"]) or age > self.lease_seconds
        return age > self.lease_seconds

    def take(self) -> bool:
        """Claim: True when this process now holds it (a stale claim is taken over)."""
        if self._create():
            return True
        if not self.is_stale():
            return False
        away = self.path.with_name(f"{self.path.name}.{self.owner}.stale")
        try:
            os.replace(self.path, away)  # one process wins the rename
        except FileNotFoundError:
            return False
        away.unlink(missing_ok=True)
        return self._create()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Refresh the claim's lease while the body runs, then release it."""
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(self.lease_seconds / 4):
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        thread = threading.Thread(target=refresh, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release()


class Claims:
    """The job claims of one study folder, held by this process."""

    def __init__(self, folder: Path, owner: str, lease_seconds: float = LEASE_SECONDS) -> None:
        self.folder = Path(folder) / ".claims"
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()

    def claim(self, job: str) -> Claim:
        return Claim(self.folder / f"{job}.claim", self.owner, self.lease_seconds)

    def is_stale(self, job: str) -> bool:
        """Whether ``job``'s claim belongs to a process that is gone (or whose lease ran out)."""
        return self.claim(job).is_stale()

    def take(self, job: str) -> bool:
        """Claim ``job``: True when this process now holds it (a stale claim is taken over)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.claim(job).take()

    def release(self, job: str) -> None:
        self.claim(job).release()

    def held(self, job: str) -> AbstractContextManager[None]:
        """Refresh ``job``'s lease while the body runs, then release it."""
        return self.claim(job).held()

    def tidy(self) -> None:
        """Remove the claims folder when no claim is left in it."""
        try:
            self.folder.rmdir()
        except OSError:
            pass
