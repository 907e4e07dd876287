"""Which process does which work: torchrun ranks (``RANK``/``WORLD_SIZE``) and the device of each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from featscope.errors import FeatscopeError


@dataclass
class Ranks:
    """This process's rank among ``world`` processes (torchrun); ``owned`` says whether it set up the group."""

    rank: int = 0
    world: int = 1
    owned: bool = False

    def mine(self, index: int) -> bool:
        """Item ``index`` goes to rank ``index % world``."""
        return index % self.world == self.rank

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def join_ranks() -> Ranks:
    """The rank of this process: from torch.distributed when initialised, else ``RANK``/``WORLD_SIZE``
    (torchrun's environment); with ``WORLD_SIZE > 1`` a gloo process group is set up for the final barrier."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world <= 1:
        return Ranks()
    if not 0 <= rank < world:
        raise FeatscopeError(f"RANK={rank} is outside WORLD_SIZE={world}")
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(hours=12))
    return Ranks(rank, world, owned=True)


def rank_device(device: str, ranks: Ranks) -> str:
    """``auto`` on a multi-GPU torchrun launch means this rank's GPU (``LOCAL_RANK``)."""
    if device == "auto" and ranks.world > 1 and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', ranks.rank)) % torch.cuda.device_count()}"
    return device
