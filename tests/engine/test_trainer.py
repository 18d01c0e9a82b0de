"""Atomic checkpoints: an interrupted write never replaces or shadows the last good checkpoint."""

import pytest
import torch

from ns_diffusion_methods.engine import trainer as engine


def test_interrupted_save_leaves_previous_checkpoint_as_latest(tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "nerfstudio_models"
    ckpt_dir.mkdir()
    engine.atomic_torch_save({"step": 5}, ckpt_dir / "step-000000005.ckpt")

    real_save = torch.save

    def dying_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")  # what a kill in the middle of torch.save leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        engine.atomic_torch_save({"step": 10}, ckpt_dir / "step-000000010.ckpt")
    monkeypatch.setattr(torch, "save", real_save)

    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["step-000000005.ckpt"]
    assert engine.latest_complete_step(ckpt_dir) == 5
    assert torch.load(ckpt_dir / "step-000000005.ckpt")["step"] == 5


def test_latest_complete_step_ignores_other_files(tmp_path):
    (tmp_path / "step-000000003.ckpt").write_bytes(b"")
    (tmp_path / "step-000000009.ckpt.tmp").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert engine.latest_complete_step(tmp_path) == 3


def test_work_between_iterations_stays_out_of_the_iteration_timer(object_removal_capture, tmp_path, monkeypatch):
    """A BetweenIterationsCallback runs after the timed iteration of its step, under the training lock, and its
    duration is logged on its own: nerfstudio's `Train Iter (time)` (and with it the ETA) never includes it."""
    import dataclasses
    import time

    from harness import BASE_FLAGS, SMALL_NERFACTO_FLAGS
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline
    from nerfstudio.utils import writer
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run
    from ns_diffusion_methods.engine import BetweenIterationsCallback, DiffusionTrainerConfig

    ran, locks = [], []
    iteration_times = []

    def slow_update(step: int):
        if step != 3:
            return False
        assert locks[0].locked()
        time.sleep(1.0)
        ran.append(step)
        return True

    original = VanillaPipeline.get_training_callbacks

    def with_update(self, attributes):
        lock = attributes.trainer.train_lock
        locks.append(lock)
        return [*original(self, attributes), BetweenIterationsCallback("Dataset update", slow_update)]

    monkeypatch.setattr(VanillaPipeline, "get_training_callbacks", with_update)
    real_put_time = writer.put_time

    def recording_put_time(name, duration, step, **kwargs):
        if name == writer.EventName.ITER_TRAIN_TIME:
            iteration_times.append((step, duration))
        return real_put_time(name, duration, step, **kwargs)

    monkeypatch.setattr(writer, "put_time", recording_put_time)

    def as_package_trainer(config):
        return DiffusionTrainerConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                                         if f.name != "_target"})

    import nerfstudio.scripts.train as ns_train

    real_main = ns_train.main
    monkeypatch.setattr(ns_train, "main", lambda config: real_main(as_package_trainer(config)))
    config_path, _ = train_run("nerfacto", object_removal_capture, tmp_path,
                               [*BASE_FLAGS, *SMALL_NERFACTO_FLAGS, "--max-num-iterations", "6",
                                "--logging.steps-per-log", "1"],
                               ["nerfstudio-data", "--eval-mode", "filename"])
    assert ran == [3]
    durations = dict(iteration_times)
    assert durations[3] < 0.9 and durations[4] < 0.9, durations  # the 1 s of work is in neither iteration's time
    events = EventAccumulator(str(config_path.parent)).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("Dataset update (s)")]
    assert [step for step, _ in logged] == [3] and logged[0][1] >= 1.0
