"""SSDNeRF on several devices, with two gloo processes on the CPU.

- Two ranks, each stepping its own two objects, make the same update as one process stepping all four (decoder,
  U-Net, loss normaliser, every object's code and Adam state), and the ranks' networks stay identical.
- A checkpoint written by rank 0 from both ranks' shards holds every object in its global order, and loads into one
  process or into either rank.
- ``ns-train ssdnerf-small`` through nerfstudio's training loop on two ranks: a run killed after a checkpoint resumes
  on two ranks and on one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.engine.distributed import Shard, gathered_chunks
from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig
from ns_diffusion_methods.methods.ssdnerf.training import RayBatch, single_stage_step
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

NUM_OBJECTS = 4
STEPS = 2
K_IN = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init(rank: int, world_size: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)


def tiny_model(shard: Shard):
    torch.manual_seed(0)
    config = SSDNeRFModelConfig(
        code_channels=2, code_resolution=8, code_init_scale=0.5,
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=0),
        unet=CodeUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,),
                            attention_head_dim=8, dropout=0.0, norm_num_groups=8),
    )
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=box, num_train_data=8, metadata={"num_objects": NUM_OBJECTS}, shard=shard)


def start_of_both(shard: Shard):
    """The model of ``shard`` with the one-process model's networks and its objects' codes."""
    full = tiny_model(Shard(NUM_OBJECTS))
    model = tiny_model(shard)
    for name in ("decoder", "unet", "decoder_ema", "unet_ema"):
        getattr(model, name).load_state_dict(getattr(full, name).state_dict())
    with torch.no_grad():
        model.codes_pre.copy_(full.codes_pre[shard.items])
    return model


def step_inputs(step: int):
    """Timesteps, noise and the rays of every inner step for all four objects (fixed per step)."""
    g = torch.Generator().manual_seed(100 + step)
    t = torch.randint(0, 1000, (NUM_OBJECTS,), generator=g)
    noise = torch.randn(NUM_OBJECTS, 6, 8, 8, generator=g)
    rays = []
    for _ in range(K_IN):
        directions = torch.nn.functional.normalize(torch.randn(NUM_OBJECTS, 24, 3, generator=g), dim=-1)
        origins = -2.5 * directions + 0.3 * torch.randn(NUM_OBJECTS, 24, 3, generator=g)
        rays.append(RayBatch(origins, directions, torch.rand(NUM_OBJECTS, 24, 3, generator=g),
                             torch.full((NUM_OBJECTS,), 6.0 * 32 * 32)))
    return t, noise, rays


def train(model, objects: torch.Tensor, world_size: int):
    """STEPS outer iterations on ``objects``; returns the summed losses per step."""
    # SGD for the networks, so that the comparison sees their gradients: Adam turns rounding-level gradients (the
    # attention key bias's exact gradient is zero) into full-size steps of either sign
    optimizers = [torch.optim.SGD(model.unet.parameters(), lr=1e-2),
                  torch.optim.SGD(model.decoder.parameters(), lr=1e-2)]
    losses = []
    for step in range(STEPS):
        t, noise, rays = step_inputs(step)

        def ray_batch(k, rays=rays):
            r = rays[k]
            return RayBatch(r.origins[objects], r.directions[objects], r.target[objects], r.num_pixels[objects])

        loss, _ = single_stage_step(model, objects, ray_batch, K_IN, 1e-2, optimizers[0], optimizers[1],
                                    timesteps=t[objects], noise=noise[objects], perturb=False, update_norm=True,
                                    step=step, world_size=world_size)
        losses.append(torch.stack(list(loss.values())))
    return torch.stack(losses)


def _step_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    from ns_diffusion_methods.engine.trainer import atomic_torch_save, contribute_to_checkpoint
    from ns_diffusion_methods.methods.ssdnerf.checkpoints import streamed_code_state

    _init(rank, world_size, port)
    shard = Shard(NUM_OBJECTS, rank, world_size)
    model = start_of_both(shard)
    losses = train(model, shard.items, world_size)
    state = {"losses": losses, **{k: v.clone() for k, v in model.state_dict().items()}}
    torch.save(state, Path(out_dir) / f"rank-{rank}.pt")
    # a checkpoint of both shards, written by rank 0 (chunks of 1 object: every chunk is one collective)
    streamed = streamed_code_state(model, "_model.", "float32", chunk_objects=1)
    if rank == 0:
        atomic_torch_save({"pipeline": streamed}, Path(out_dir) / "step-000000002.ckpt")
    else:
        contribute_to_checkpoint(streamed)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ssdnerf-two-ranks")
    mp.spawn(_step_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return out


def test_two_ranks_step_as_one_process_over_all_their_objects(two_ranks):
    one = start_of_both(Shard(NUM_OBJECTS))
    one_losses = train(one, torch.arange(NUM_OBJECTS), world_size=1)
    ranks = [torch.load(two_ranks / f"rank-{r}.pt") for r in range(2)]

    # each rank's losses are means over its two objects; their mean is the one process's mean over four
    torch.testing.assert_close((ranks[0]["losses"] + ranks[1]["losses"]) / 2, one_losses, rtol=1e-5, atol=1e-7)
    expected = one.state_dict()
    for name, value in expected.items():
        if name.startswith(("decoder", "unet", "diffusion_norm")):
            # the ranks hold the same networks, and they are the one process's
            assert torch.equal(ranks[0][name], ranks[1][name]), name
            torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-6, msg=name)
    for r in range(2):
        for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps"):
            # rank r owns objects r and r + 2: their codes and Adam states move exactly as in the one process
            # (to rounding: 1e-5 of the buffer's largest magnitude)
            scale = float(expected[name].abs().max())
            torch.testing.assert_close(ranks[r][name], expected[name][r::2], rtol=1e-4, atol=1e-5 * scale, msg=name)
    assert ranks[0]["code_steps"].tolist() == [STEPS * K_IN] * 2
    assert not torch.equal(expected["codes_pre"], start_of_both(Shard(NUM_OBJECTS)).codes_pre)  # codes moved


def test_a_checkpoint_of_two_shards_loads_into_any_number_of_ranks(two_ranks):
    ranks = [torch.load(two_ranks / f"rank-{r}.pt") for r in range(2)]
    saved = torch.load(two_ranks / "step-000000002.ckpt")["pipeline"]
    for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps"):
        whole = saved[f"_model.{name}"]
        assert whole.shape[0] == NUM_OBJECTS
        assert torch.equal(whole[0::2], ranks[0][name]) and torch.equal(whole[1::2], ranks[1][name]), name
    state = {k[len("_model."):]: v for k, v in saved.items()}
    one = tiny_model(Shard(NUM_OBJECTS))
    one.load_state_dict(state, strict=False)
    assert torch.equal(one.codes_pre, saved["_model.codes_pre"])
    second = tiny_model(Shard(NUM_OBJECTS, 1, 2))
    second.load_state_dict(state, strict=False)
    assert torch.equal(second.codes_pre, ranks[1]["codes_pre"])
    assert torch.equal(second.code_steps, ranks[1]["code_steps"])
    # three ranks: rank 2 of 3 owns object 2 only
    third = tiny_model(Shard(NUM_OBJECTS, 2, 3))
    third.load_state_dict(state, strict=False)
    assert torch.equal(third.codes_pre, saved["_model.codes_pre"][2:3])


def test_shard_maps_global_objects_to_local_rows():
    shard = Shard(7, 1, 3)
    assert shard.items.tolist() == [1, 4] and shard.num_local == 2
    assert shard.local(torch.tensor([4, 1])).tolist() == [1, 0]
    assert shard.owns(4) and not shard.owns(5) and not shard.owns(7)
    with pytest.raises(ValueError, match="does not own"):
        shard.local(torch.tensor([2]))
    one = Shard(3)
    assert [chunk.tolist() for chunk in gathered_chunks(torch.arange(3), one, 2)] == [[0, 1], [2]]


def test_a_rank_shows_its_nearest_object_below_the_chosen_one():
    model = start_of_both(Shard(NUM_OBJECTS, 1, 2))  # owns objects 1 and 3
    model.active_object = 2  # owned by rank 0: rank 1 shows object 1
    assert torch.equal(model.shown_code(), model.activate(model.codes_pre[0]))
    model.active_object = 3
    assert torch.equal(model.shown_code(), model.activate(model.codes_pre[1]))
    model.active_object = 0  # nothing of rank 1 lies below: its first object
    assert torch.equal(model.shown_code(), model.activate(model.codes_pre[0]))


# ---------------------------------------------------------------- ns-train ssdnerf-small on two ranks

TINY_FLAGS = [
    "--machine.device-type", "cpu", "--mixed-precision", "False",
    "--pipeline.model.code-resolution", "8",
    "--pipeline.model.unet.block-out-channels", "16", "32",
    "--pipeline.model.unet.attention-resolutions", "4",
    "--pipeline.model.unet.attention-head-dim", "8",
    "--pipeline.model.unet.norm-num-groups", "8",
    "--pipeline.model.renderer.num-samples", "8",
    "--pipeline.model.renderer.num-importance-samples", "0",
    "--pipeline.datamanager.objects-per-batch", "2",
    "--pipeline.datamanager.rays-per-object", "32",
    "--pipeline.inner-steps", "2", "2",
    "--pipeline.inner-steps-milestones", "100",
    "--steps-per-save", "2",
    "--steps-per-eval-batch", "1000", "--steps-per-eval-image", "1000", "--steps-per-eval-all-images", "100000",
    "--pipeline.eval-lpips", "False",
]


def _config(data: Path, out: Path, iterations: int, num_devices: int, extra=()):
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    from ns_diffusion_methods.benchmark.nerfstudio_runs import UNATTENDED_FLAGS

    args = ["ssdnerf-small", *UNATTENDED_FLAGS, "--output-dir", str(out), "--data", str(data), *TINY_FLAGS,
            "--max-num-iterations", str(iterations), "--machine.num-devices", str(num_devices), *extra, "srn-data"]
    config = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    config.pipeline.datamanager.data = config.data
    config.set_timestamp()
    return config


def _train_worker(rank: int, world_size: int, port: int, config, out_dir: str) -> None:
    """nerfstudio's distributed worker (``ns-train --machine.num-devices N``) with gloo instead of NCCL."""
    from nerfstudio.scripts.train import train_loop
    from nerfstudio.utils import comms

    from ns_diffusion_methods.compat import package_run

    _init(rank, world_size, port)
    comms.LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    with package_run():
        train_loop(rank, world_size, config, global_rank=rank)
    dist.destroy_process_group()


def _checkpoints(config) -> list:
    folder = config.get_base_dir() / "nerfstudio_models"
    return sorted(folder.glob("step-*.ckpt")) if folder.is_dir() else []


@pytest.mark.slow
def test_two_rank_training_killed_after_a_checkpoint_resumes_on_two_ranks_and_on_one(objects_dataset, tmp_path):
    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    killed = _config(objects_dataset, tmp_path / "killed", 100000, 2, ["--save-only-latest-checkpoint", "False"])
    killed.save_config()
    context = mp.spawn(_train_worker, args=(2, _free_port(), killed, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 240
    while len(_checkpoints(killed)) < 2 and time.monotonic() < deadline and all(p.is_alive()
                                                                             for p in context.processes):
        time.sleep(0.2)
    for process in context.processes:
        process.kill()
        process.join()
    written = _checkpoints(killed)
    assert len(written) >= 2, "the two-rank run wrote no checkpoints"
    last = torch.load(written[-1], map_location="cpu", weights_only=False)
    step = last["step"]
    state = last["pipeline"]
    assert state["_model.codes_pre"].shape[0] == 8  # every object, gathered from both ranks
    # each rank steps its own 2 objects K_in = 2 times per iteration
    assert int(state["_model.code_steps"].sum()) == (step + 1) * 2 * 2 * 2
    assert bool((state["_model.code_steps"][0::2] > 0).any()) and bool((state["_model.code_steps"][1::2] > 0).any())

    # resume on two ranks for two more iterations
    resumed = _config(objects_dataset, tmp_path / "resumed", 2, 2, ["--load-dir", str(written[-1].parent)])
    resumed.save_config()
    mp.spawn(_train_worker, args=(2, _free_port(), resumed, str(tmp_path)), nprocs=2, join=True)
    after = torch.load(_checkpoints(resumed)[-1], map_location="cpu", weights_only=False)
    assert after["step"] == step + 2
    assert int(after["pipeline"]["_model.code_steps"].sum()) == int(state["_model.code_steps"].sum()) + 2 * 2 * 2 * 2
    moved = after["pipeline"]["_model.code_steps"] != state["_model.code_steps"]
    assert torch.equal(after["pipeline"]["_model.codes_pre"][~moved], state["_model.codes_pre"][~moved])

    # and on one process, from the two-rank checkpoint
    flags = [*TINY_FLAGS, "--max-num-iterations", "1", "--load-dir", str(written[-1].parent)]
    config_path, _ = train_run("ssdnerf-small", objects_dataset, tmp_path / "one", flags, ["srn-data"])
    single = torch.load(sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))[-1],
                        map_location="cpu", weights_only=False)
    assert single["step"] == step + 1
    assert int(single["pipeline"]["_model.code_steps"].sum()) == int(state["_model.code_steps"].sum()) + 2 * 2
