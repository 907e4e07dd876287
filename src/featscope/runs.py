"""Run folders: atomic writes, config, JSON-lines logs and metrics (the layout of every method)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from featscope.errors import RunExistsError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are ordinary files
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        _name_file(error, path)
        raise
    return path


def _name_file(error: BaseException, path: Path) -> None:
    """Give an OSError of a write (which names no file) ``path`` as its file name, for the error line."""
    if isinstance(error, OSError) and error.filename is None:
        error.filename = str(path)


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


class RunFolder:
    """A run folder that appears whole or not at all.

    Everything is written into a hidden sibling ``.<name>.partial`` and renamed into place by
    ``commit()``; an interrupted run leaves no folder a later run would mistake for a result.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise RunExistsError(f"output path {str(self.path)!r} is a file; choose a folder name with --out")
        if self.path.is_dir() and any(self.path.iterdir()) and not overwrite:
            raise RunExistsError(
                f"output folder {str(self.path)!r} already holds files; pass --overwrite or choose another --out"
            )
        self.overwrite = overwrite
        self.partial = self.path.parent / f".{self.path.name}.partial"
        self._log = None

    def open(self) -> RunFolder:
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self._log = (self.partial / "log.jsonl").open("a")
        return self

    def file(self, name: str) -> Path:
        """Path of a file inside the run being written."""
        return self.partial / name

    def log(self, record: dict) -> None:
        try:
            self._log.write(strict_json(record) + "\n")
            self._log.flush()
        except OSError as error:  # a full disk: say which file
            _name_file(error, self.file("log.jsonl"))
            raise

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.file(name), obj)

    def write_yaml(self, name: str, obj: Any) -> Path:
        return atomic_write_text(self.file(name), yaml.safe_dump(obj, sort_keys=False))

    def close(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def commit(self) -> Path:
        """Move the finished run into place (replacing an old one when overwriting)."""
        self.close()
        if self.path.exists():
            old = self.path.parent / f".{self.path.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        """Throw the unfinished run away (a log that cannot be flushed, e.g. on a full disk, goes with it)."""
        with contextlib.suppress(OSError):
            self.close()
        shutil.rmtree(self.partial, ignore_errors=True)
