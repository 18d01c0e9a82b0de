"""difix3d-nerfacto and difix3d-splat end to end on CPU: ns-train with the tiny fixer, pseudo views at the configured
steps and walking toward their targets, --load-dir (own checkpoints and stock nerfacto's), ns-eval, ns-render."""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
import torch

from ns_diffusion_methods.dataset_updates.pseudo_views import PseudoViews
from ns_diffusion_methods.geometry.poses import nearest_pose_indices, pose_distance

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

#: the small presets, made smaller still: few rays, few targets, rounds at steps 3, 7, 11
TINY_NERFACTO = ["--pipeline.model.num-levels", "4", "--pipeline.model.log2-hashmap-size", "12",
                 "--pipeline.model.max-res", "64"]
FAST = {
    "difix3d-nerfacto-small": ["--pipeline.datamanager.train-num-rays-per-batch", "256",
                               "--pipeline.datamanager.patch-size", "8", *TINY_NERFACTO],
    "difix3d-splat-small": ["--pipeline.model.num-random", "500"],
}
#: the tiny Difix: a fixer backend subcommand with its flags, so it comes after every other flag
TINY_FIXER = ["pipeline.fixer:difix", "--pipeline.fixer.model", "tiny"]
ROUNDS = ["--pipeline.max-targets", "2", "--pipeline.steps-per-fix", "4", "--pipeline.fix-start-step", "3",
          "--pipeline.fix-batch-size", "2", *TINY_FIXER]
ITERATIONS = 12
EXPECTED_ROUND_STEPS = [3, 7, 11]
METHODS = ["difix3d-nerfacto-small", "difix3d-splat-small"]


def checkpoint_state(config_path: Path) -> dict:
    return torch.load(harness.latest_checkpoint(config_path), map_location="cpu", weights_only=False)


def pseudo_views_of(state: dict) -> PseudoViews:
    views = PseudoViews.empty()
    views.load_state_dict({k[len("pseudo_views."):]: v for k, v in state["pipeline"].items()
                           if k.startswith("pseudo_views.")})
    return views


@pytest.fixture(scope="module", params=METHODS)
def trained(request, sparse_views_capture, tmp_path_factory):
    """(method, config.yml) of a 12-step run with pseudo-view rounds at steps 3, 7 and 11."""
    method = request.param
    output = tmp_path_factory.mktemp(method)
    config = harness.train(method, sparse_views_capture, output, [*FAST[method], *ROUNDS],
                           max_num_iterations=ITERATIONS)
    return method, config


def test_pseudo_views_appear_at_the_configured_steps_and_approach_their_targets(trained, sparse_views_capture):
    method, config = trained
    state = checkpoint_state(config)
    views = pseudo_views_of(state)
    assert len(views) == 2
    assert int(views.rounds) == len(EXPECTED_ROUND_STEPS)
    assert int(views.last_round_step) == EXPECTED_ROUND_STEPS[-1]
    assert bool(views.filled.all())
    assert views.images.last_step.tolist() == [EXPECTED_ROUND_STEPS[-1]] * 2  # replaced every round
    assert views.images.updates.tolist() == [len(EXPECTED_ROUND_STEPS)] * 2

    # each pseudo camera started at the training camera nearest its target and moved 0.5 per round
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=sparse_views_capture).setup().get_dataparser_outputs("train")
    training = outputs.cameras.camera_to_worlds
    start = training[nearest_pose_indices(views.targets, training)]
    expected = torch.clamp(pose_distance(start, views.targets) - 0.5 * len(EXPECTED_ROUND_STEPS), min=0.0)
    torch.testing.assert_close(views.distances_to_targets(), expected, atol=1e-4, rtol=0)
    assert bool((expected > 0).all())  # still walking: the distances really shrank by 1.5
    # no fixer weights in the checkpoint
    assert not [k for k in state["pipeline"] if "fixer" in k or "unet" in k or "vae" in k]


def test_pseudo_views_are_logged_as_images(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _method, config = trained
    events = EventAccumulator(str(config.parent), size_guidance={"images": 0}).Reload()
    tags = events.Tags()["images"]
    assert "PseudoViews/000" in tags and "PseudoViews/001" in tags


def test_each_round_runs_between_iterations_with_its_duration_logged(trained):
    """Rounds run between iterations, outside nerfstudio's iteration timer (``Train Iter (time)``, ``Train Rays /
    Sec``, the ETA), each logged with its own duration."""
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes
    from nerfstudio.utils.eval_utils import eval_setup
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ns_diffusion_methods.engine.callbacks import BetweenIterationsCallback

    _method, config = trained
    events = EventAccumulator(str(config.parent), size_guidance={"scalars": 0}).Reload()
    rounds = events.Scalars("Pseudo-view round (s)")
    assert [event.step for event in rounds] == EXPECTED_ROUND_STEPS  # after the iteration of the round's step
    assert all(event.value > 0 for event in rounds)
    # nerfstudio never runs the round in its timed iteration: the callback has no location of nerfstudio's
    _config, pipeline, _checkpoint, _step = eval_setup(config, test_mode="inference")
    attributes = TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=pipeline, trainer=None)
    callbacks = [c for c in pipeline.get_training_callbacks(attributes) if c.func == pipeline.pseudo_view_round]
    assert len(callbacks) == 1 and isinstance(callbacks[0], BetweenIterationsCallback)
    assert callbacks[0].where_to_run == [] and callbacks[0].name == "Pseudo-view round"


def test_load_dir_restores_the_pseudo_views(trained, sparse_views_capture, tmp_path, capsys):
    method, config = trained
    before = pseudo_views_of(checkpoint_state(config)).state_dict()
    resumed = harness.train(method, sparse_views_capture, tmp_path, [
        *FAST[method], "--pipeline.max-targets", "2",
        # resuming a difix3d run keeps its schedule: the next round is steps-per-fix (150) after its last one (11), so
        # none while resuming and the views must be the loaded ones
        "--load-dir", str(config.parent / "nerfstudio_models"), *TINY_FIXER], max_num_iterations=2)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "resuming a difix3d run: its last round was at step 11" in out and "it will not fix anything" in out
    state = checkpoint_state(resumed)
    assert state["step"] == ITERATIONS + 1  # resumed at step 12, ran steps 12 and 13
    # and training went on: the loaded parameters (not stale copies) were optimised
    loaded = checkpoint_state(config)["pipeline"]
    changed = [k for k, v in state["pipeline"].items() if k.startswith("_model.") and v.is_floating_point()
               and k in loaded and v.shape == loaded[k].shape and not torch.equal(v, loaded[k])]
    key = "_model.gauss_params.means" if "splat" in method else "_model.field.mlp_base.model.1.layers.0.weight"
    assert key in changed, changed[:5]
    after = pseudo_views_of(state).state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_ns_eval_writes_metrics_for_rgb_and_rgb_fixed(trained):
    _method, config = trained
    results = harness.evaluate(config)
    metrics = results["results"]
    for key in ("psnr", "ssim", "psnr_fixed", "ssim_fixed"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert (config.parent / "eval.json").is_file()


def test_ns_render_writes_rgb_fixed_frames(trained, tmp_path):
    _method, config = trained
    frames = harness.render_dataset(config, tmp_path / "renders", split="test", outputs=("rgb_fixed",))
    assert len(frames) == 8  # one per evaluation view
    assert all("rgb_fixed" in str(f) for f in frames)


def test_the_fixer_is_loaded_only_when_rgb_fixed_is_read(trained):
    from nerfstudio.utils.eval_utils import eval_setup

    _method, config = trained
    _config, pipeline, _checkpoint, _step = eval_setup(config, test_mode="inference")
    assert len(pipeline.pseudo_views) == 2  # restored from the checkpoint
    assert not pipeline.fixer_handle.loaded
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    outputs = pipeline.model.get_outputs_for_camera(camera)
    assert "rgb_fixed" in outputs.keys() and not pipeline.fixer_handle.loaded  # listed (viewer menu), not computed
    rgb = outputs["rgb"]
    assert not pipeline.fixer_handle.loaded
    fixed = outputs["rgb_fixed"]
    assert pipeline.fixer_handle.loaded and fixed.shape == rgb.shape


def test_load_dir_accepts_a_stock_nerfacto_checkpoint(sparse_views_capture, tmp_path, capsys):
    """The paper's protocol: nerfacto first, then difix3d-nerfacto --load-dir (same params and optimizer groups)."""
    sizes = [*harness.SMALL_NERFACTO_FLAGS, *TINY_NERFACTO]
    base = harness.train("nerfacto", sparse_views_capture, tmp_path / "base", sizes, max_num_iterations=2)
    config = harness.train("difix3d-nerfacto-small", sparse_views_capture, tmp_path / "difix", [
        *sizes, *FAST["difix3d-nerfacto-small"], "--pipeline.max-targets", "1",
        "--pipeline.steps-per-fix", "100",  # no --pipeline.fix-start-step: derived from the loaded checkpoint
        "--load-dir", str(base.parent / "nerfstudio_models"), *TINY_FIXER], max_num_iterations=2)
    assert "fixing starts at step 2 (the first step of this run" in " ".join(capsys.readouterr().out.split())
    state = checkpoint_state(config)
    assert state["step"] == 3  # resumed after nerfacto's step 1
    base_state = checkpoint_state(base)
    assert set(state["optimizers"]) == set(base_state["optimizers"])  # every optimizer state loaded and kept
    views = pseudo_views_of(state)
    assert int(views.rounds) == 1 and int(views.last_round_step) == 2  # the fixing phase started at once


@pytest.mark.parametrize("backend", ["identity", "oracle"])
def test_other_fixer_backends_train_evaluate_and_render(backend, sparse_views_capture, tmp_path):
    """``pipeline.fixer:identity`` (the ablation baseline) and ``pipeline.fixer:oracle`` from the command line:
    a run with a round, then ns-eval and ns-render from its config.yml, with the backend the run trained with."""
    import yaml

    chosen = {"identity": ["pipeline.fixer:identity"],
              "oracle": ["pipeline.fixer:oracle", "--pipeline.fixer.scene", str(sparse_views_capture / "scene.json")]}
    config = harness.train("difix3d-nerfacto-small", sparse_views_capture, tmp_path, [
        *FAST["difix3d-nerfacto-small"], "--pipeline.max-targets", "1", "--pipeline.fix-start-step", "1",
        "--pipeline.steps-per-fix", "100", *chosen[backend]], max_num_iterations=2)
    saved = yaml.load(config.read_text(), Loader=yaml.Loader)
    assert saved.pipeline.fixer.summary().startswith(backend) and saved.untrained_models == []
    assert int(pseudo_views_of(checkpoint_state(config)).rounds) == 1
    metrics = harness.evaluate(config)["results"]
    if backend == "identity":  # rgb_fixed is rgb
        assert metrics["psnr_fixed"] == pytest.approx(metrics["psnr"], abs=1e-3)
    else:  # the scene's ground truth, lightly degraded, against a model trained for two steps
        assert metrics["psnr_fixed"] > metrics["psnr"] + 10
    frames = harness.render_dataset(config, tmp_path / "renders", split="test", outputs=("rgb_fixed",))
    assert len(frames) == 8
