"""The iterative dataset update follows t(k) = t_max - (t_max - t_min) sqrt(k / K) with k = 0..K: the first update
at t_max, the last at t_min, K + 1 updates at steps U, 2U, ..., (K + 1) U, after the first inpainting from pure
noise. Noise levels computed by hand; the presets run every update."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from nerfstudio.engine.callbacks import TrainingCallbackAttributes

from ns_diffusion_methods.methods.mald_nerf.config import mald_nerf_config, mald_nerf_small_config
from ns_diffusion_methods.methods.mald_nerf.schedule import idu_timestep, update_index, update_steps

from .conftest import TINY_LDM, build_pipeline

T = 1000

#: t(k) = 0.98 - 0.68 sqrt(k / 8), by hand: sqrt(1/8) = 0.35355 -> 0.98 - 0.24042 = 0.73958; sqrt(2/8) = 0.5 -> 0.64;
#: sqrt(3/8) = 0.61237 -> 0.56359; sqrt(4/8) = 0.70711 -> 0.49917; sqrt(5/8) = 0.79057 -> 0.44241;
#: sqrt(6/8) = 0.86603 -> 0.39110; sqrt(7/8) = 0.93541 -> 0.34392; sqrt(8/8) = 1 -> 0.3
MALD_NERF_TIMESTEPS = [980, 740, 640, 564, 499, 442, 391, 344, 300]
#: t(k) = 0.98 - 0.68 sqrt(k / 3): sqrt(1/3) = 0.57735 -> 0.58740; sqrt(2/3) = 0.81650 -> 0.42478; 1 -> 0.3
SMALL_TIMESTEPS = [980, 587, 425, 300]


def _schedule(config):
    """``{step: start timestep}`` of every dataset update a preset makes over its iterations ``0 .. max - 1``."""
    pipeline = config.pipeline
    result = {}
    for step in range(config.max_num_iterations):
        k = update_index(step, pipeline.update_every, pipeline.num_updates)
        if k is not None:
            result[step] = idu_timestep(k, pipeline.num_updates, pipeline.t_max, pipeline.t_min, T)
    return result


def test_mald_nerf_preset_updates_from_t_max_to_t_min():
    pipeline = mald_nerf_config.pipeline
    assert (pipeline.update_every, pipeline.num_updates, pipeline.t_max, pipeline.t_min) == (2500, 8, 0.98, 0.3)
    schedule = _schedule(mald_nerf_config)
    assert list(schedule) == [2500, 5000, 7500, 10000, 12500, 15000, 17500, 20000, 22500]  # 9 updates < 25000
    assert list(schedule.values()) == MALD_NERF_TIMESTEPS
    assert update_steps(2500, 8) == list(schedule)


def test_small_preset_updates_from_t_max_to_t_min():
    pipeline = mald_nerf_small_config.pipeline
    assert (pipeline.update_every, pipeline.num_updates) == (200, 3)
    schedule = _schedule(mald_nerf_small_config)
    assert list(schedule) == [200, 400, 600, 800]  # 4 updates within 1000 iterations
    assert list(schedule.values()) == SMALL_TIMESTEPS
    assert update_steps(200, 3) == list(schedule)


@pytest.fixture(scope="module")
def tiny_pipeline(object_removal_capture):
    """mald-nerf-small with the tiny LDM (not customised), U = 5, K = 2."""
    return build_pipeline(object_removal_capture, [
        "--pipeline.update-every", "5", "--pipeline.num-updates", "2",
        *TINY_LDM, "--pipeline.inpainter.customize", "False"])


def test_the_pipeline_inpaints_from_noise_then_from_renders_at_t_max_down_to_t_min(tiny_pipeline):
    pipeline = tiny_pipeline
    calls = []

    def record(images, masks, start_timestep=None, source=None, generator=None):
        calls.append(start_timestep)
        return images  # the schedule is under test, not the LDM

    pipeline.inpainter.inpaint = record
    try:
        writes = {}
        for step in range(21):
            before = pipeline.datamanager.inpainted.updates.clone()
            pipeline.maybe_update_dataset(step)
            if not bool((pipeline.datamanager.inpainted.updates == before).all()):
                writes[step] = sorted(set(calls))
                calls.clear()
    finally:
        del pipeline.inpainter.inpaint
    # K = 2: t(0) = 0.98 T, t(1) = 0.98 - 0.68 sqrt(1/2) = 0.49917 T, t(2) = 0.3 T
    assert writes == {0: [None], 5: [980], 10: [499], 15: [300]}
    assert pipeline.datamanager.inpainted.updates.tolist() == [4] * pipeline.datamanager.num_train_images


def test_updates_past_the_last_step_are_announced(tiny_pipeline, capsys):
    assert tiny_pipeline.missed_updates(0, 16) == []  # steps 0..15 include 5, 10 and 15
    assert tiny_pipeline.missed_updates(0, 15) == [15]
    assert tiny_pipeline.missed_updates(3, 7) == [10, 15]  # a resumed run training steps 3..6
    plan = " ".join(tiny_pipeline.plan(3, 7).split())
    assert "2 of the 3 dataset updates (steps 5, 10, 15) come after the last training step 6" in plan
    # the trainer's callbacks set-up says it, for the steps nerfstudio will train: range(start, start + max)
    trainer = SimpleNamespace(config=SimpleNamespace(max_num_iterations=12), _start_step=0)
    tiny_pipeline.get_training_callbacks(TrainingCallbackAttributes(
        optimizers=None, grad_scaler=None, pipeline=tiny_pipeline, trainer=trainer))
    out = " ".join(capsys.readouterr().out.split())
    assert "1 of the 3 dataset updates (steps 5, 10, 15) come after the last training step 11" in out
