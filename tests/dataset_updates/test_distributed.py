"""run_sharded over two real processes (gloo on CPU): identical results on both ranks, each item processed once."""

import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ns_diffusion_methods.dataset_updates import DistributedContext, run_sharded, shard_indices


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    processed = []

    def work(index: int) -> torch.Tensor:
        processed.append(index)
        generator = torch.Generator().manual_seed(1000 + index)  # per-item seed: the result does not depend on rank
        return torch.rand(2, 3, generator=generator)

    results = run_sharded(list(range(7)), work)
    torch.save({k: v for k, v in results.items()}, Path(out_dir) / f"results-{rank}.pt")
    (Path(out_dir) / f"processed-{rank}.json").write_text(json.dumps(processed))
    dist.destroy_process_group()


def test_two_ranks_gather_identical_results_each_item_once(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    processed = [json.loads((tmp_path / f"processed-{r}.json").read_text()) for r in range(2)]
    assert sorted(processed[0] + processed[1]) == list(range(7))  # every item once, by exactly one rank
    assert processed == [[0, 2, 4, 6], [1, 3, 5]]
    results = [torch.load(tmp_path / f"results-{r}.pt") for r in range(2)]
    assert sorted(results[0]) == list(range(7))
    for index in range(7):
        assert torch.equal(results[0][index], results[1][index])


def test_single_process_is_a_plain_loop():
    assert run_sharded([3, 1], lambda i: i * 10, DistributedContext()) == {3: 30, 1: 10}
    assert shard_indices(range(5), 1, 2) == [1, 3]
