"""Splitting dataset-update work across the ranks of a multi-GPU run and gathering the results on every rank.

nerfstudio trains on several GPUs with torch.distributed, every rank running the whole training loop with its own
copy of the datamanager. Without care, every rank would inpaint or fix every image (N times the work) and, with
different random draws, hold different datasets. :func:`run_sharded` gives each rank a disjoint share of the indices
(``indices[rank::world_size]``), runs the 2D work on that share only, then all-gathers the results so that every rank
ends with the same complete set, each image processed exactly once. With one process it is a plain loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: ``rank`` in ``[0, world_size)``."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "DistributedContext":
        """The context of the initialised default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def shard_indices(indices: Sequence[int], rank: int, world_size: int) -> List[int]:
    """The share of ``indices`` that ``rank`` processes: every ``world_size``-th, starting at ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), but is {rank}")
    return list(indices)[rank::world_size]


def run_sharded(indices: Sequence[int], work: Callable[[int], T],
                context: DistributedContext | None = None) -> Dict[int, T]:
    """Run ``work(index)`` for this rank's share of ``indices`` and return every rank's results on every rank.

    Args:
        indices: all the items of this update (image or pseudo-camera indices), the same list on every rank.
        work: the per-item work; its result must be picklable (tensors are moved to the CPU for the exchange).
        context: the rank and world size; default is the current process group.

    Returns:
        ``{index: result}`` for all ``indices``, identical on every rank.
    """
    context = context or DistributedContext.current()
    local = {index: work(index) for index in shard_indices(indices, context.rank, context.world_size)}
    if context.world_size == 1:
        return local
    local_cpu = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in local.items()}
    gathered: List[Dict[int, T]] = [{} for _ in range(context.world_size)]
    dist.all_gather_object(gathered, local_cpu)
    merged: Dict[int, T] = {}
    for part in gathered:
        overlap = merged.keys() & part.keys()
        assert not overlap, f"indices processed by two ranks: {sorted(overlap)}"
        merged.update(part)
    assert set(merged) == set(indices), "some indices were processed by no rank"
    return merged
