"""Run folders: atomic writes, config, JSON-lines logs and metrics (the layout of every method)."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from featscope.claims import Claim
from featscope.errors import OutputError, RunBusyError, RunExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _writing(path: str | Path) -> Iterator[None]:
    """Raise an OSError of creating or writing ``path`` as an :class:`OutputError` naming ``path`` (not a
    temporary file or claim of it): the one-line error, still an OSError with its errno."""
    try:
        yield
    except OutputError:
        raise
    except OSError as error:
        raise OutputError.of(error, str(path)) from error


def make_folder(path: str | Path) -> Path:
    """``mkdir -p path``; an OSError (a file in the way: "Not a directory") is an :class:`OutputError`."""
    path = Path(path)
    with _writing(path):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        path.mkdir(parents=True, exist_ok=True)
    return path


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    make_folder(path.parent)
    with _writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are ordinary files
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename: never a half-written file."""
    return _atomic(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def strict_json(obj: Any, **kwargs: Any) -> str:
    """JSON text that any parser reads: NaN and infinities (not JSON numbers) become null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, strict_json(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return _atomic(path, lambda handle: torch.save(obj, handle))


RUN_MARKERS = ("config.yaml", "metrics.json")


def run_claim(path: str | Path) -> Claim:
    """The claim of the run folder ``path`` by this process: ``.<name>.claim`` beside it."""
    path = Path(path)
    return Claim(path.parent / f".{path.name}.claim", owner=f"{socket.gethostname()}-{os.getpid()}")


def tidy_claim(path: str | Path) -> None:
    """Remove the claim that a writer of the finished run folder ``path`` left when it was killed between its
    rename and its release (a live writer's claim stays)."""
    claim = run_claim(path)
    if claim.path.exists() and claim.take():
        claim.release()


class RunFolder:
    """A run folder that appears whole or not at all, written by one run at a time.

    ``open()`` claims the folder (``.<name>.claim`` beside it, made atomically; a live claim of another run is a
    :class:`RunBusyError`, a dead run's is taken over). Everything is written into a hidden sibling
    ``.<name>.partial`` and renamed into place by ``commit()``; an interrupted run leaves no folder a later run
    would mistake for a result. An OSError of creating or writing it is an :class:`OutputError`.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        self._refuse_results()
        self.partial = self.path.parent / f".{self.path.name}.partial"
        self.claim = run_claim(self.path)
        self._log = None
        self._held: contextlib.ExitStack | None = None

    def _refuse_results(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunExistsError(f"output path {str(self.path)!r} is a file; choose a folder name with --out")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.overwrite:
            raise RunExistsError(
                f"output folder {str(self.path)!r} already holds files; pass --overwrite or choose another --out"
            )

    def open(self) -> RunFolder:
        """Claim the folder and start writing it (a dead run's leftovers are removed)."""
        make_folder(self.path.parent)
        with _writing(self.path):
            taken = self.claim.take()
        if not taken:
            holder = self.claim.holder()
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            raise RunBusyError(
                f"output folder {str(self.path)!r} is being written by another run ({who}); wait for it to finish "
                "or choose another --out"
            )
        self._held = contextlib.ExitStack()
        self._held.enter_context(self.claim.held())
        try:
            self._refuse_results()  # finished by another run since this one began
            with _writing(self.path):
                if self.partial.exists():
                    shutil.rmtree(self.partial)
                self.partial.mkdir()
                self._log = (self.partial / "log.jsonl").open("a")
        except BaseException:
            self._release()
            raise
        return self

    def file(self, name: str) -> Path:
        """Path of a file inside the run being written."""
        return self.partial / name

    def log(self, record: dict) -> None:
        with _writing(self.file("log.jsonl")):  # a full disk: say which file
            self._log.write(strict_json(record) + "\n")
            self._log.flush()

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.file(name), obj)

    def write_yaml(self, name: str, obj: Any) -> Path:
        return atomic_write_text(self.file(name), yaml.safe_dump(obj, sort_keys=False))

    def close(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            with _writing(self.file("log.jsonl")):
                log.close()

    def commit(self) -> Path:
        """Move the finished run into place (replacing an old one when overwriting) and release the claim."""
        self.close()
        with _writing(self.path):
            if self.path.exists():
                old = self.path.parent / f".{self.path.name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(self.path, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(self.partial, self.path)
        self._release()
        return self.path

    def abandon(self) -> None:
        """Throw the unfinished run away (a log that cannot be flushed, e.g. on a full disk, goes with it) and
        release the claim."""
        with contextlib.suppress(OSError):
            self.close()
        shutil.rmtree(self.partial, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()
