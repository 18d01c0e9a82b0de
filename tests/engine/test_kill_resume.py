"""No lost work: a real ``ns-train`` process killed with SIGKILL resumes with ``--load-dir``, its dataset-update state
intact.

For every method whose training rewrites its own training data, a training subprocess (the ``ns-train`` console
script) is SIGKILLed at a random moment after its first checkpoint (in the middle of a step, or of a checkpoint
write), and then

- every ``step-N.ckpt`` left in ``nerfstudio_models/`` loads with ``torch.load`` (checkpoint writes are atomic: a
  partial file never lands there), and the newest holds the method's dataset-update state;
- the same command plus ``--load-dir`` resumes from exactly that checkpoint (its log says so and it continues at the
  next step) with that state as saved, not recomputed, and with the optimizers and schedulers continuing:

  * ``mald-nerf``: the inpainted training views (``datamanager.inpainted``), written by the first inpainting and a
    dataset update, are identical after resuming and were not written again (no new first inpainting);
  * ``difix3d-nerfacto`` / ``difix3d-splat``: the progressive pseudo views (``pseudo_views.*``: poses, fixed images,
    rounds) are identical after resuming;
  * ``ssdnerf``: the per-object triplane codes and their Adam state (``codes_pre``, ``code_exp_avg``,
    ``code_exp_avg_sq``, ``code_steps``): objects the resumed step did not visit are identical, and every object's
    Adam step count goes on from the saved one.

``renderdiffusion`` has no dataset-update state (its training images never change; its network weights, EMA and
optimizers are nerfstudio's ordinary checkpoint content, resumed in ``tests/methods/renderdiffusion``), so it has no
test here.

The last tests kill a process in the middle of an :func:`atomic_torch_save` (of any checkpoint; of an SSDNeRF
checkpoint whose per-object codes are being streamed in) and check that the previous checkpoint is still the newest
complete one, for this package's resume and for nerfstudio's own checkpoint lookup, and that it loads.

Runs on the CPU; nothing is downloaded (the subprocesses go through an unreachable proxy, so LPIPS is reported
unavailable instead of fetching weights).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import harness
import pytest
import torch

from ns_diffusion_methods.benchmark.nerfstudio_runs import UNATTENDED_FLAGS
from ns_diffusion_methods.engine.trainer import atomic_torch_save, latest_complete_step, partial_dir_of

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: generous limits for a loaded 2-core machine (a run normally needs 20-40 s, most of it importing nerfstudio)
START_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300

CHECKPOINT_NAME = re.compile(r"^step-(\d{9})\.ckpt$")


# ------------------------------------------------------------------------------------------------------------------
# running ns-train


def ns_train_command() -> List[str]:
    """The ``ns-train`` console script of this interpreter's environment (``python -m`` if it has none)."""
    script = Path(sys.executable).with_name("ns-train")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nerfstudio.scripts.train"]


def subprocess_env() -> Dict[str, str]:
    """One thread, offline (an unreachable proxy makes downloads fail at once), no wandb, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    unreachable = "http://127.0.0.1:9"
    env.update({
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "MPLBACKEND": "Agg",
        "http_proxy": unreachable, "https_proxy": unreachable, "HTTP_PROXY": unreachable, "HTTPS_PROXY": unreachable,
    })
    return env


def start(command: Sequence[str], log_path: Path) -> subprocess.Popen:
    """Start ``command`` in its own process group, in the log's folder, output to ``log_path``."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent,
                                env=subprocess_env(), start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and any children it started (its own process group, created by :func:`start`)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def log_tail(log_path: Path, chars: int = 3000) -> str:
    return log_path.read_text(errors="replace")[-chars:] if log_path.exists() else "(no log)"


def checkpoint_steps(folder: Path) -> List[int]:
    """Steps of the ``step-N.ckpt`` files in ``folder`` (sorted)."""
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for name in os.listdir(folder) if (m := CHECKPOINT_NAME.match(name)))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def checkpoint(folder: Path, step: int) -> dict:
    return load(folder / f"step-{step:09d}.ckpt")


def flat(text: str) -> str:
    """``text`` without whitespace: nerfstudio's console wraps long lines (paths included) at 120 columns."""
    return re.sub(r"\s+", "", text)


# ------------------------------------------------------------------------------------------------------------------
# the methods


@dataclass(frozen=True)
class Case:
    """How to train one method until it has dataset-update state, and how to resume it without changing that state."""

    method: str
    capture: str
    """Name of the conftest fixture with the data."""
    flags: Tuple[str, ...]
    dataparser: Tuple[str, ...] = ()
    first_step: int = 4
    """Kill only once a checkpoint at this step or later exists (the state exists by then)."""
    resume_iterations: int = 2
    """Iterations of the resumed run (chosen so that it cannot legitimately change the state)."""
    steps_per_save: int = 4

    def command(self, data: Path, output: Path, max_num_iterations: int, *extra: str) -> List[str]:
        """``ns-train METHOD ... --output-dir OUTPUT --data DATA [extra] [flags] [dataparser]`` (CPU, no evaluation;
        ``flags`` may end with a component subcommand and its flags: tyro applies flags to the subcommand they
        follow)."""
        return [*ns_train_command(), self.method, *UNATTENDED_FLAGS, *harness.BASE_FLAGS,
                "--output-dir", str(output), "--data", str(data),
                "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0",
                "--steps-per-save", str(self.steps_per_save), "--max-num-iterations", str(max_num_iterations),
                *extra, *self.flags, *self.dataparser]


#: mald-nerf-small, smaller: the tiny LDM without customisation, first inpainting at step 0, one dataset update at
#: step 3 (re-inpainted from renders); checkpoints at 4, 8, ... so every checkpoint holds both
MALD_NERF = Case(
    method="mald-nerf-small",
    capture="object_removal_capture",
    flags=(
        "--pipeline.model.hidden-dim", "16", "--pipeline.model.hidden-dim-color", "16",
        "--pipeline.model.num-levels", "4", "--pipeline.model.log2-hashmap-size", "12",
        "--pipeline.model.max-res", "64", "--pipeline.model.num-proposal-samples-per-ray", "16", "8",
        "--pipeline.model.num-nerf-samples-per-ray", "8", "--pipeline.model.eval-num-rays-per-chunk", "2048",
        "--pipeline.datamanager.train-num-rays-per-batch", "64", "--pipeline.datamanager.mask-patch-size", "8",
        "--pipeline.datamanager.num-mask-patches", "2",
        "--pipeline.discriminator.base-channels", "8", "--pipeline.discriminator.max-channels", "16",
        "--pipeline.update-every", "3", "--pipeline.num-updates", "0",
    ),
    # the inpainter is a subcommand, so it comes last like the dataparser, with its flags after it
    dataparser=("pipeline.inpainter:ldm", "--pipeline.inpainter.model", "tiny",
                "--pipeline.inpainter.customize", "False"),
)

#: difix3d with the tiny fixer: pseudo-view rounds at steps 3, 7, 11, ... and checkpoints at 4, 8, 12, ..., so a run
#: resumed from any checkpoint N runs steps N+1 and N+2, where no round is due
_ROUNDS = ("--pipeline.max-targets", "2", "--pipeline.steps-per-fix", "4", "--pipeline.fix-start-step", "3",
           "--pipeline.fix-batch-size", "2", "pipeline.fixer:difix", "--pipeline.fixer.model", "tiny")
DIFIX3D_NERFACTO = Case(
    method="difix3d-nerfacto-small",
    capture="sparse_views_capture",
    flags=("--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.datamanager.patch-size", "8",
           "--pipeline.model.num-levels", "4", "--pipeline.model.log2-hashmap-size", "12",
           "--pipeline.model.max-res", "64", *_ROUNDS),
)
DIFIX3D_SPLAT = Case(
    method="difix3d-splat-small",
    capture="sparse_views_capture",
    flags=("--pipeline.model.num-random", "500", *_ROUNDS),
)

#: ssdnerf-small, smaller: 8 objects, 4 per step, 2 code steps each; the resumed run takes one step, so 4 objects
#: are not visited by it
SSDNERF = Case(
    method="ssdnerf-small",
    capture="objects_dataset",
    dataparser=("srn-data",),
    flags=(
        "--pipeline.model.code-resolution", "8", "--pipeline.model.unet.block-out-channels", "16", "32",
        "--pipeline.model.unet.attention-resolutions", "4", "--pipeline.model.unet.attention-head-dim", "8",
        "--pipeline.model.unet.norm-num-groups", "8", "--pipeline.model.renderer.num-samples", "12",
        "--pipeline.datamanager.objects-per-batch", "4", "--pipeline.datamanager.rays-per-object", "64",
        "--pipeline.inner-steps", "2", "2", "--pipeline.inner-steps-milestones", "100",
    ),
    first_step=2,
    resume_iterations=1,
    steps_per_save=2,
)


def pipeline_entries(state: dict, prefix: str) -> Dict[str, torch.Tensor]:
    return {k: v for k, v in state["pipeline"].items() if k.startswith(prefix)}


def assert_same(before: Dict[str, torch.Tensor], after: Dict[str, torch.Tensor]) -> None:
    assert before and before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), f"{key} changed across the resume"


def check_mald_nerf(saved: dict, resumed: dict, resumed_log: str) -> None:
    store = pipeline_entries(saved, "datamanager.inpainted.")
    n = store["datamanager.inpainted.images"].shape[0]
    # state at the kill: the first inpainting (step 0) and the dataset update at step 3 wrote every view
    assert store["datamanager.inpainted.updates"].tolist() == [2] * n
    assert store["datamanager.inpainted.last_step"].tolist() == [3] * n
    assert store["datamanager.inpainted.images"].float().mean() > 10
    # after resuming: the same images, written no further time (updates would count a re-inpainting)
    assert_same(store, pipeline_entries(resumed, "datamanager.inpainted."))
    assert "First inpainting of the training views" not in resumed_log
    assert "Dataset update" not in resumed_log


def check_difix3d(saved: dict, resumed: dict, resumed_log: str) -> None:
    views = pipeline_entries(saved, "pseudo_views.")
    rounds = int(views["pseudo_views.rounds"])
    assert rounds >= 1 and int(views["pseudo_views.last_round_step"]) == 3 + 4 * (rounds - 1) < saved["step"]
    assert views["pseudo_views.images.updates"].tolist() == [rounds, rounds]  # both views fixed every round
    assert views["pseudo_views.images.images"].float().mean() > 0
    assert_same(views, pipeline_entries(resumed, "pseudo_views."))
    assert "pseudo-view round" not in resumed_log


def check_ssdnerf(saved: dict, resumed: dict, resumed_log: str) -> None:
    before = pipeline_entries(saved, "_model.code")
    after = pipeline_entries(resumed, "_model.code")
    steps_before, steps_after = before["_model.code_steps"], after["_model.code_steps"]
    # state at the kill: (N + 1) steps x 4 objects x 2 code steps, every moment filled where an object was visited
    assert int(steps_before.sum()) == (saved["step"] + 1) * 4 * 2
    assert bool((before["_model.code_exp_avg_sq"][steps_before > 0] > 0).all())
    # the resumed step visited 4 objects twice each, counting on from their saved Adam steps
    visited = steps_after != steps_before
    assert int(visited.sum()) == 4
    assert torch.equal(steps_after[visited], steps_before[visited] + 2)
    for key in ("_model.codes_pre", "_model.code_exp_avg", "_model.code_exp_avg_sq"):
        assert torch.equal(after[key][~visited], before[key][~visited]), key
        assert not torch.equal(after[key][visited], before[key][visited]), key


CHECKS: Dict[str, Callable[[dict, dict, str], None]] = {
    "mald-nerf-small": check_mald_nerf,
    "difix3d-nerfacto-small": check_difix3d,
    "difix3d-splat-small": check_difix3d,
    "ssdnerf-small": check_ssdnerf,
}


def assert_optimizers_continue(saved: dict, resumed: dict, iterations: int) -> None:
    """Adam step counts and scheduler epochs of the resumed run go on from the checkpoint's.

    A parameter without a gradient in a step (e.g. an unused hash-grid entry) is not stepped, and a whole group can
    skip steps by design (nerfacto's proposal networks are updated only every few steps, on a schedule), so per
    parameter the count grows by at most ``iterations``; in at least one group (the field, stepped every iteration)
    the most-stepped parameters grow by exactly that. A fresh optimizer would count from zero, far below the
    checkpoint's counts.
    """
    compared, exact = 0, 0
    for group, optimizer in saved["optimizers"].items():
        counts = [(float(state["step"]), float(resumed["optimizers"][group]["state"][index]["step"]))
                  for index, state in optimizer["state"].items() if "step" in state]
        if not counts:
            continue
        assert all(before <= after <= before + iterations for before, after in counts), (group, counts)
        exact += max(after for _, after in counts) == max(before for before, _ in counts) + iterations
        compared += 1
    assert compared > 0 and exact > 0
    assert saved["schedulers"].keys() == resumed["schedulers"].keys()
    for group, scheduler in saved["schedulers"].items():
        assert resumed["schedulers"][group]["last_epoch"] == scheduler["last_epoch"] + iterations, group


# ------------------------------------------------------------------------------------------------------------------
# the tests


def run_killed(case: Case, data: Path, output: Path, log_path: Path) -> Tuple[Path, float]:
    """Train until a checkpoint at ``case.first_step`` or later exists, wait a random moment, SIGKILL.

    Returns the checkpoint folder and the delay between seeing the checkpoint and the kill.
    """
    proc = start(case.command(data, output, 100_000), log_path)  # far more steps than it will live
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        folder: Optional[Path] = None
        while True:
            assert proc.poll() is None, f"ns-train ended before it could be killed:\n{log_tail(log_path)}"
            assert time.monotonic() < deadline, f"no checkpoint after {START_TIMEOUT_S} s:\n{log_tail(log_path)}"
            folders = list(output.glob("*/*/run/nerfstudio_models"))
            if folders and any(step >= case.first_step for step in checkpoint_steps(folders[0])):
                folder = folders[0]
                break
            time.sleep(0.05)
        # anywhere in the next couple of checkpoint intervals: in a step, or in a checkpoint write
        delay = random.uniform(0.0, 1.5)
        time.sleep(delay)
        assert proc.poll() is None, f"ns-train ended before it could be killed:\n{log_tail(log_path)}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        kill_group(proc)  # children too (data loader workers), and the process itself if an assert failed above
    return folder, delay


@pytest.mark.slow
@pytest.mark.timeout(2 * START_TIMEOUT_S + RUN_TIMEOUT_S)
@pytest.mark.parametrize("case", [MALD_NERF, DIFIX3D_NERFACTO, DIFIX3D_SPLAT, SSDNERF], ids=lambda c: c.method)
def test_sigkilled_training_resumes_from_its_last_checkpoint_with_its_state(case, request, tmp_path):
    data = request.getfixturevalue(case.capture)
    folder, delay = run_killed(case, data, tmp_path / "killed", tmp_path / "killed.log")

    # every checkpoint left behind is complete; nothing else is in the folder
    names = sorted(os.listdir(folder))
    assert names and all(CHECKPOINT_NAME.match(name) for name in names), names
    for name in names:
        assert load(folder / name)["step"] == int(CHECKPOINT_NAME.match(name).group(1))
    newest = latest_complete_step(folder)
    assert newest is not None and newest >= case.first_step and newest % case.steps_per_save == 0
    saved = checkpoint(folder, newest)

    # the same command, resumed: it must load the newest checkpoint and continue at the next step
    resumed_output, resumed_log = tmp_path / "resumed", tmp_path / "resumed.log"
    proc = start(case.command(data, resumed_output, case.resume_iterations, "--load-dir", str(folder)), resumed_log)
    try:
        returncode = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        kill_group(proc)
    log = resumed_log.read_text(errors="replace")
    assert returncode == 0, f"resumed ns-train failed (killed {delay:.2f} s after a checkpoint):\n{log[-3000:]}"
    assert flat(f"Done loading Nerfstudio checkpoint from {folder / f'step-{newest:09d}.ckpt'}") in flat(log)
    resumed_folder = next(resumed_output.glob("*/*/run/nerfstudio_models"))
    last = newest + case.resume_iterations
    assert checkpoint_steps(resumed_folder)[-1] == last  # steps newest+1 .. newest+iterations ran
    resumed = checkpoint(resumed_folder, last)
    assert resumed["step"] == last

    CHECKS[case.method](saved, resumed, log)
    assert_optimizers_continue(saved, resumed, case.resume_iterations)


#: a process that saves a checkpoint, then writes the next one slowly (a file handle that sleeps after each write) and
#: says when it is well into that write
_SLOW_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    import torch

    from ns_diffusion_methods.engine.trainer import atomic_torch_save

    folder = Path(sys.argv[1])
    atomic_torch_save({"step": 5, "weights": torch.arange(8.0)}, folder / "step-000000005.ckpt")

    real_save = torch.save

    class SlowHandle:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            written = self.handle.write(data)
            self.handle.flush()
            if self.written < 100_000 <= self.written + written:
                print("well into writing step 10", flush=True)
            self.written += written
            time.sleep(0.02)
            return written

        def flush(self):
            self.handle.flush()

    def slow_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as handle:
                return real_save(obj, SlowHandle(handle), *args, **kwargs)
        return real_save(obj, SlowHandle(f), *args, **kwargs)

    torch.save = slow_save
    big = {f"layer{i}": torch.randn(1 << 14) for i in range(2000)}  # 2000 records: about 40 s of writing
    atomic_torch_save({"step": 10, "weights": big}, folder / "step-000000010.ckpt")
    print("finished writing", flush=True)
""")


def kill_writer_at(script: str, folder: Path, log_path: Path, marker: str) -> None:
    """Run ``script`` (a checkpoint writer) on ``folder``, SIGKILL it as soon as its log shows ``marker``, and check
    that it was killed before it finished."""
    proc = start([sys.executable, "-c", script, str(folder)], log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while marker not in log_tail(log_path):
            assert proc.poll() is None, f"the writer ended before it could be killed:\n{log_tail(log_path)}"
            assert time.monotonic() < deadline, f"the writer never got to {marker!r}:\n{log_tail(log_path)}"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        kill_group(proc)
    assert "finished writing" not in log_tail(log_path)


@pytest.mark.timeout(START_TIMEOUT_S)
def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint_newest(tmp_path):
    run = tmp_path / "run"
    folder = run / "nerfstudio_models"
    folder.mkdir(parents=True)
    kill_writer_at(_SLOW_WRITER, folder, tmp_path / "writer.log", "well into writing step 10")

    # the checkpoint folder holds only the complete step 5: the killed write left its truncated file elsewhere
    assert os.listdir(folder) == ["step-000000005.ckpt"]
    partials = list(partial_dir_of(folder).glob("step-000000010.ckpt.*"))
    assert len(partials) == 1 and partials[0].stat().st_size >= 100_000
    with pytest.raises(RuntimeError, match="failed reading zip archive"):
        load(partials[0])
    # this package's resume and nerfstudio's own checkpoint lookup (ns-eval, ns-render) both find step 5, and it loads
    assert latest_complete_step(folder) == 5
    names = os.listdir(folder)  # nerfstudio's eval_setup takes the highest "step-N." of every name in the folder
    assert sorted(int(x[x.find("-") + 1: x.find(".")]) for x in names)[-1] == 5
    assert torch.equal(load(folder / "step-000000005.ckpt")["weights"], torch.arange(8.0))

    # the next save (a resumed run is another process) clears the killed write's leftover
    atomic_torch_save({"weights": torch.ones(3)}, folder / "step-000000006.ckpt")
    assert list(partial_dir_of(folder).iterdir()) == []
    assert latest_complete_step(folder) == 6


#: a process that saves an SSDNeRF model's checkpoint (codes streamed chunk by chunk, as the package's trainer writes
#: them), trains on, then writes the next checkpoint slowly (one object per chunk, a pause per chunk) and says when it
#: is in the middle of the codes
_SLOW_CODES_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    import torch
    from nerfstudio.data.scene_box import SceneBox

    from ns_diffusion_methods.engine.trainer import atomic_torch_save
    from ns_diffusion_methods.methods.ssdnerf import checkpoints
    from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig
    from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig

    folder = Path(sys.argv[1])
    torch.manual_seed(0)
    config = SSDNeRFModelConfig(code_channels=2, code_resolution=8, code_init_scale=0.5, unet=CodeUNetConfig(
        block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,), attention_head_dim=8,
        norm_num_groups=8))
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=box, num_train_data=40, metadata={"num_objects": 40})

    def save(step):
        state = model.state_dict()
        state.update(checkpoints.streamed_code_state(model, "", "bfloat16", chunk_objects=1))
        atomic_torch_save({"step": step, "pipeline": state}, folder / f"step-{step:09d}.ckpt")

    model.code_adam_step(torch.arange(0, 40, 2), torch.randn(20, *model.code_shape), lr=0.05)
    save(5)
    torch.save({name: getattr(model, name) for name in ("codes_pre", "code_steps")}, folder.parent / "at-step-5.pt")
    model.code_adam_step(torch.arange(40), torch.randn(40, *model.code_shape), lr=0.05)

    real_chunks = checkpoints.gathered_chunks

    def slow_chunks(buffer, shard, chunk_objects):
        for index, chunk in enumerate(real_chunks(buffer, shard, chunk_objects)):
            if buffer is model.codes_pre and index == 10:
                print("in the middle of the codes of step 10", flush=True)
            time.sleep(0.1)
            yield chunk

    checkpoints.gathered_chunks = slow_chunks
    save(10)
    print("finished writing", flush=True)
""")


@pytest.mark.timeout(START_TIMEOUT_S)
def test_sigkill_while_ssdnerf_codes_are_written_keeps_the_previous_checkpoint_loadable(tmp_path):
    from nerfstudio.data.scene_box import SceneBox

    from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig
    from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig

    folder = tmp_path / "run" / "nerfstudio_models"
    folder.mkdir(parents=True)
    kill_writer_at(_SLOW_CODES_WRITER, folder, tmp_path / "writer.log", "in the middle of the codes of step 10")

    # only the complete step 5 is in the folder, for this package's resume and for nerfstudio's lookup
    assert os.listdir(folder) == ["step-000000005.ckpt"]
    assert len(list(partial_dir_of(folder).glob("step-000000010.ckpt.*"))) == 1
    assert latest_complete_step(folder) == 5
    names = os.listdir(folder)
    assert sorted(int(x[x.find("-") + 1: x.find(".")]) for x in names)[-1] == 5

    # it loads (nerfstudio's torch.load) into a model, which has step 5's codes bit for bit and trains on from them
    expected = load(tmp_path / "run" / "at-step-5.pt")
    config = SSDNeRFModelConfig(code_channels=2, code_resolution=8, unet=CodeUNetConfig(
        block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,), attention_head_dim=8,
        norm_num_groups=8))
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=box, num_train_data=40, metadata={"num_objects": 40})
    model.load_state_dict(torch.load(folder / "step-000000005.ckpt", map_location="cpu")["pipeline"])
    assert torch.equal(model.codes_pre, expected["codes_pre"])
    assert torch.equal(model.code_steps, expected["code_steps"]) and int(model.code_steps.sum()) == 20
    model.code_adam_step(torch.tensor([0, 1]), torch.ones(2, *model.code_shape), lr=0.05)
    assert model.code_steps[:2].tolist() == [2, 1]
