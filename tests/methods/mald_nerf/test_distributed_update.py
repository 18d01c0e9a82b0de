"""mald-nerf's dataset update split over two ranks (torch.distributed with gloo, two CPU processes).

nerfstudio's multi-GPU launcher needs CUDA, so the two ranks are started here as nerfstudio would start them (one
process each, the default process group initialised) and run the pipeline's real ``maybe_update_dataset``: the
first inpainting (step 0) and one re-inpainting from renders (step U). Each rank must inpaint only its share of the
views, every view exactly once per update, and both ranks must end with the same inpainted dataset, equal to the one
a single process computes.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

UPDATE_EVERY = 5
FLAGS = ["--pipeline.update-every", str(UPDATE_EVERY), "--pipeline.num-updates", "2",
         "pipeline.inpainter:ldm", "--pipeline.inpainter.model", "tiny", "--pipeline.inpainter.customize", "False"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(capture: Path):
    """The pipeline as ns-train builds it, seeded alike on every rank (as nerfstudio seeds every rank)."""
    import importlib.util  # the spawned ranks import this module by path, not as part of the test package

    spec = importlib.util.spec_from_file_location("_mald_conftest", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.build_pipeline(capture, FLAGS)


def _updates(capture: Path):
    """Run the first inpainting and update 1; returns the stored images, their steps, the views this process
    inpainted per update, and how often the inpainter ran."""
    torch.set_num_threads(1)
    pipeline = _build(capture)
    calls = []
    inpaint = pipeline.inpainter.inpaint

    def counting(image, *args, **kwargs):
        calls.append(len(calls))
        return inpaint(image, *args, **kwargs)

    pipeline.inpainter.inpaint = counting
    processed = {}
    original = pipeline.inpaint_view

    def recording(index, k):
        processed.setdefault(k, []).append(index)
        return original(index, k)

    pipeline.inpaint_view = recording
    for step in (0, UPDATE_EVERY):
        pipeline.maybe_update_dataset(step)
    store = pipeline.datamanager.inpainted
    return store.images.clone(), store.last_step.clone(), processed, len(calls)


def _worker(rank: int, world_size: int, port: int, capture: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        images, last_step, processed, calls = _updates(Path(capture))
        torch.save({"images": images, "last_step": last_step}, Path(out_dir) / f"store-{rank}.pt")
        (Path(out_dir) / f"processed-{rank}.json").write_text(json.dumps({"processed": processed, "calls": calls}))
    finally:
        dist.destroy_process_group()


def test_two_ranks_hold_the_same_inpainted_dataset_each_view_inpainted_once(object_removal_capture, tmp_path):
    os.environ["OMP_NUM_THREADS"] = "1"
    mp.spawn(_worker, args=(2, _free_port(), str(object_removal_capture), str(tmp_path)), nprocs=2, join=True)

    logs = [json.loads((tmp_path / f"processed-{rank}.json").read_text()) for rank in range(2)]
    stores = [torch.load(tmp_path / f"store-{rank}.pt") for rank in range(2)]
    num_views = stores[0]["images"].shape[0]
    for k in ("null", "0"):  # the first inpainting (k None, JSON "null") and update k = 0
        shares = [log["processed"][k] for log in logs]
        assert sorted(shares[0] + shares[1]) == list(range(num_views))  # each view once, by one rank
        assert shares[0] and shares[1]  # both ranks worked
    # the inpainter ran once per view and update in total, not once per view and update on each rank
    assert logs[0]["calls"] + logs[1]["calls"] == 2 * num_views

    # identical datasets on both ranks ...
    assert torch.equal(stores[0]["images"], stores[1]["images"])
    assert stores[0]["last_step"].tolist() == [UPDATE_EVERY] * num_views
    # ... and the same as one process doing all of the work
    images, last_step, processed, calls = _updates(object_removal_capture)
    assert calls == 2 * num_views and processed == {None: list(range(num_views)), 0: list(range(num_views))}
    assert torch.equal(images, stores[0]["images"])
