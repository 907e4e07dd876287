"""What the diffusers-folder families share: folder / hub-id resolution and packed conditioning."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from featscope.backbones.base import Backbone
from featscope.backbones.index import check_family
from featscope.backbones.latent import _from_hub, _looks_like_path, reason
from featscope.errors import FeatscopeError, InputFileError


def load_diffusers(
    source: str,
    *,
    family: str,
    what: str,
    layout: str,
    example: str,
    load: Callable[[str, bool], Backbone],
) -> Backbone:
    """``family:SOURCE`` for a diffusers folder or hub id: ``load(source, local_only)`` with one-line errors."""
    path = Path(source).expanduser()
    takes = f"{family}: takes {layout} or a hub id such as {example}"
    if path.is_file():
        raise InputFileError(
            f"{path} is a single file; {takes} (convert a single-file checkpoint once with diffusers' "
            "from_single_file(...).save_pretrained(FOLDER))"
        )
    check_family(source, family)
    if path.is_dir():
        try:
            return load(str(path), True)
        except FeatscopeError:
            raise
        except Exception as exc:
            raise FeatscopeError(f"cannot load {path} as {what} ({layout}): {reason(exc)}") from exc
    if _looks_like_path(source):
        raise InputFileError(f"{source} does not exist; {takes}")
    return _from_hub(
        source,
        lambda local_only: load(source, local_only),
        what=what,
        fix=f"download it once with network access, or give a local folder: {family}:/path/to/diffusers/folder",
    )


# -- several conditioning inputs in one tensor ------------------------------------------------------
def pack(sequence: torch.Tensor, *vectors: torch.Tensor) -> torch.Tensor:
    """(B, L, D) sequence embedding and (B, d_i) vectors (d_i <= D) -> (B, L + n, D), one zero-padded row each.

    The solvers treat conditioning as one tensor (concatenated, indexed, shifted by learned deltas), so
    pooled embeddings and micro-conditioning ride along as extra rows; see :func:`unpack`.
    """
    width = sequence.shape[-1]
    rows = [torch.nn.functional.pad(v, (0, width - v.shape[-1])).unsqueeze(1).to(sequence.dtype) for v in vectors]
    return torch.cat([sequence, *rows], dim=1)


def unpack(cond: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Inverse of :func:`pack`: the sequence and the vectors of widths ``sizes``."""
    count = len(sizes)
    vectors = [cond[:, cond.shape[1] - count + i, :size] for i, size in enumerate(sizes)]
    return cond[:, : cond.shape[1] - count], vectors
