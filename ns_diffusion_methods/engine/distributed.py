"""What the package's methods need from torch.distributed when nerfstudio trains them on several GPUs.

nerfstudio trains on several GPUs with torch.distributed, every rank running the whole training loop with its own
copy of the datamanager and pipeline. The package's pieces of that, in one place:

- **Work split over the ranks, results on every rank** (dataset updates: inpainting, Difix rounds). Without care,
  every rank would inpaint or fix every image (N times the work) and, with different random draws, hold different
  datasets. :func:`run_sharded` gives each rank a disjoint share of the indices (``indices[rank::world_size]``), runs
  the 2D work on that share only, then all-gathers the results so that every rank ends with the same complete set,
  each image processed exactly once. With one process it is a plain loop.
- **Items owned by one rank** (SSDNeRF's per-object codes and their Adam states): :class:`Shard` says which items a
  rank owns (the same ``rank::world_size`` rule) and where they sit in its local buffers; :func:`gathered_chunks`
  assembles the global tensor chunk by chunk on rank 0 for a checkpoint.
- **Modules trained outside DDP** (a discriminator, SSDNeRF's decoder and U-Net, whose training steps call methods
  other than ``forward``): :func:`broadcast_module` starts every rank from rank 0's weights, :func:`average_gradients`
  averages gradients over the ranks before an optimiser step (explicitly), and :func:`average_gradients_after_backward`
  does the same from gradient hooks after every backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

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


def is_distributed(world_size: int) -> bool:
    """Whether a run of ``world_size`` processes has to talk to the other ranks (and can: a process group exists)."""
    if world_size <= 1:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"world size is {world_size}, but torch.distributed has no process group; nerfstudio's "
                           f"launcher (`ns-train ... --machine.num-devices N`) creates it.")
    return True


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers of ``module`` to every rank (what DDP does when it wraps a module:
    nerfstudio seeds each rank differently, so weights initialised independently differ)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter], world_size: int) -> None:
    """Replace each gradient of ``parameters`` by its mean over the ``world_size`` ranks (one all-reduce over all of
    them, flattened), as DDP would before an optimiser step. Every rank must call it with the same parameters in the
    same order. A parameter without a gradient on a rank takes part as zeros there; one without a gradient on every
    rank keeps none (so the optimiser skips it, as it would in one process)."""
    params = list(parameters)
    if not params:
        return
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params] + [present])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for param, anywhere in zip(params, flat[-len(params):].tolist()):
        count = param.numel()
        param.grad = flat[offset:offset + count].view_as(param).clone() if anywhere > 0 else None
        offset += count


def average_gradients_after_backward(module: nn.Module, world_size: int) -> None:
    """Average ``module``'s gradients over the ranks after every backward, from gradient hooks (for a module that is
    not wrapped in DDP and whose backward passes are the same on every rank)."""

    def hook(param: Tensor) -> None:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world_size

    for param in module.parameters():
        param.register_post_accumulate_grad_hook(hook)


@torch.no_grad()
def mean_over_ranks(value: Tensor, world_size: int) -> Tensor:
    """The mean of ``value`` over the ranks (a new tensor; ``value`` itself with one process)."""
    if world_size <= 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size


@dataclass(frozen=True)
class Shard:
    """The items (e.g. training objects) one rank owns: global items ``rank, rank + world_size, ...`` of
    ``num_items``, stored at local positions ``0, 1, ...`` (global item ``g`` at ``g // world_size``)."""

    num_items: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), but is {self.rank}")

    @property
    def num_local(self) -> int:
        """How many items this rank owns."""
        return len(range(self.rank, self.num_items, self.world_size))

    @property
    def items(self) -> Tensor:
        """``[num_local]`` the global indices of the owned items, ascending."""
        return torch.arange(self.rank, self.num_items, self.world_size, dtype=torch.long)

    def owns(self, item: int) -> bool:
        return 0 <= item < self.num_items and item % self.world_size == self.rank

    def local(self, items: Tensor) -> Tensor:
        """Local positions of global ``items`` (all owned by this rank, else ``ValueError``)."""
        items = torch.as_tensor(items, dtype=torch.long)
        if items.numel() and bool(((items % self.world_size != self.rank) | (items < 0)
                                   | (items >= self.num_items)).any()):
            raise ValueError(f"rank {self.rank} of {self.world_size} does not own all of items {items.tolist()}")
        return torch.div(items, self.world_size, rounding_mode="floor")


@torch.no_grad()
def gathered_chunks(local: Tensor, shard: Shard, chunk_items: int) -> Iterator[Tensor]:
    """The global tensor ``[shard.num_items, ...]`` whose rows live on their owners' ``local`` buffers, chunk by
    chunk of ``chunk_items`` rows: on rank 0 each chunk is complete (the owners' rows summed into zeros, which is
    exact), on other ranks it is only their contribution. Every rank must consume all chunks, in the same order
    (each is one collective); one chunk of extra memory per rank. With one process it yields slices of ``local``.
    """
    if shard.world_size == 1:
        for start in range(0, shard.num_items, chunk_items):
            yield local[start:start + chunk_items]
        return
    owned = shard.items.to(local.device)
    for start in range(0, shard.num_items, chunk_items):
        stop = min(start + chunk_items, shard.num_items)
        chunk = torch.zeros((stop - start, *local.shape[1:]), dtype=local.dtype, device=local.device)
        mine = (owned >= start) & (owned < stop)
        chunk[owned[mine] - start] = local[mine]
        dist.reduce(chunk, dst=0)
        yield chunk
