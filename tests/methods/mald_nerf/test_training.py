"""ns-train mald-nerf end to end on CPU (tiny and opencv inpainters, both dataparsers), ns-eval, and resuming."""

import math

import harness
import pytest
import torch

from .conftest import TINY_FLAGS, TINY_LDM

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow


def _checkpoint(config):
    return torch.load(harness.latest_checkpoint(config), map_location="cpu", weights_only=False)


def _record_the_store_at_each_iteration(monkeypatch):
    """``{step: (every view inpainted, updates per view)}`` as each training iteration of an ns-train run sees it."""
    from ns_diffusion_methods.methods.mald_nerf.pipeline import MaldNerfPipeline

    seen = {}
    original = MaldNerfPipeline.get_train_loss_dict

    def recording(self, step):
        store = self.datamanager.inpainted
        seen[step] = (bool(store.filled.all()), sorted(set(store.updates.tolist())))
        return original(self, step)

    monkeypatch.setattr(MaldNerfPipeline, "get_train_loss_dict", recording)
    return seen


def _scalars(run_dir):
    """TensorBoard scalars of a run: ``{tag: {step: value}}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_tiny_ldm_training_evaluation_and_resume_keep_the_inpainted_images(object_removal_capture, tmp_path,
                                                                           monkeypatch):
    flags = [*TINY_FLAGS, "--pipeline.update-every", "3", "--pipeline.num-updates", "1", "--steps-per-save", "100",
             *TINY_LDM, "--pipeline.inpainter.customization-cache-dir", str(tmp_path / "lora")]
    seen = _record_the_store_at_each_iteration(monkeypatch)
    config = harness.train("mald-nerf-small", object_removal_capture, tmp_path / "first", flags=flags,
                           max_num_iterations=4)
    # the first inpainting is in place at iteration 0; the update due at step 3 ran between iterations 2 and 3
    assert seen == {0: (True, [1]), 1: (True, [1]), 2: (True, [1]), 3: (True, [2])}
    scalars = _scalars(config.parent)
    # work outside the iteration timer is logged with its own durations; the 2 customisation steps as a curve
    assert list(scalars["Dataset update (s)"]) == [2] and scalars["Dataset update (s)"][2] > 0
    assert list(scalars["First inpainting (s)"]) == [0] and list(scalars["Customization (s)"]) == [0]
    assert list(scalars["Customization/loss"]) == [0, 1]
    # the discriminator has no scheduler: its learning rate is logged like those of the scheduled groups
    assert set(scalars["learning_rate/discriminator"]) == {0, 1, 2, 3}
    assert math.isclose(scalars["learning_rate/discriminator"][0], 0.002 * 16 / 17, rel_tol=1e-6)
    assert "learning_rate/fields" in scalars
    first = _checkpoint(config)
    assert first["step"] == 3
    images = first["pipeline"]["datamanager.inpainted.images"]
    updates = first["pipeline"]["datamanager.inpainted.updates"]
    assert images.dtype == torch.uint8 and images.float().mean() > 0
    # the first inpainting, then the update at step 3 (k = 0, at t_max)
    assert updates.tolist() == [2] * images.shape[0]
    assert first["pipeline"]["datamanager.inpainted.last_step"].tolist() == [3] * images.shape[0]
    assert "discriminator" in first["optimizers"]
    assert not any("unet" in key or "text_encoder" in key for key in first["pipeline"])
    assert all(torch.isfinite(v).all() for v in first["pipeline"].values() if v.is_floating_point())

    results = harness.evaluate(config)["results"]
    for key in ("psnr", "ssim", "masked_psnr", "mask_sharpness"):
        assert math.isfinite(results[key]), key
    assert "lpips" not in results and "m_lpips" not in results  # no backbone weights offline: left out

    # resume from the checkpoint with a different noise seed: a re-inpainting would change the images
    resumed = harness.train("mald-nerf-small", object_removal_capture, tmp_path / "resumed",
                            flags=["--pipeline.update-seed", "7",
                                   "--load-dir", str(config.parent / "nerfstudio_models"), *flags],
                            max_num_iterations=2)
    second = _checkpoint(resumed)
    assert second["step"] == 5
    assert torch.equal(second["pipeline"]["datamanager.inpainted.images"], images)
    assert torch.equal(second["pipeline"]["datamanager.inpainted.updates"], updates)


def test_opencv_training_on_the_spinnerf_layout(object_removal_capture, tmp_path):
    num_test = len(list((object_removal_capture / "images").glob("frame_eval_*.png")))
    config = harness.train("mald-nerf-small", object_removal_capture / "spinnerf", tmp_path, flags=[
        *TINY_FLAGS, "--steps-per-save", "100", "pipeline.inpainter:opencv"],
        dataparser=["spinnerf-data", "--num-test-views", str(num_test), "--mask-dilation", "3", "1"],
        max_num_iterations=3)
    state = _checkpoint(config)["pipeline"]
    stored = state["datamanager.inpainted.images"].float() / 255
    assert stored.shape[0] == 12 and stored.mean() > 0
    # ns-render dataset works on the run (inference mode: no inpainter, no training data loaded)
    images = harness.render_dataset(config, tmp_path / "renders", split="test")
    assert len(images) == num_test
