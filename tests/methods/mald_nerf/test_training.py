"""ns-train mald-nerf end to end on CPU (tiny and opencv inpainters, both dataparsers), ns-eval, and resuming."""

import math

import torch

import harness

from .conftest import TINY_FLAGS


def _checkpoint(config):
    return torch.load(harness.latest_checkpoint(config), map_location="cpu", weights_only=False)


def test_tiny_ldm_training_evaluation_and_resume_keep_the_inpainted_images(object_removal_capture, tmp_path):
    flags = [*TINY_FLAGS, "--pipeline.inpainter.model", "tiny",
             "--pipeline.customization-cache-dir", str(tmp_path / "lora"),
             "--pipeline.update-every", "3", "--pipeline.num-updates", "1", "--steps-per-save", "100"]
    config = harness.train("mald-nerf-small", object_removal_capture, tmp_path / "first", flags=flags,
                           max_num_iterations=4)
    first = _checkpoint(config)
    assert first["step"] == 3
    images = first["pipeline"]["datamanager.inpainted.images"]
    updates = first["pipeline"]["datamanager.inpainted.updates"]
    assert images.dtype == torch.uint8 and images.float().mean() > 0
    assert updates.tolist() == [2] * images.shape[0]  # the first inpainting, then the update at step 3 (k = 0, at t_max)
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
                            flags=[*flags, "--pipeline.update-seed", "7",
                                   "--load-dir", str(config.parent / "nerfstudio_models")],
                            max_num_iterations=2)
    second = _checkpoint(resumed)
    assert second["step"] == 5
    assert torch.equal(second["pipeline"]["datamanager.inpainted.images"], images)
    assert torch.equal(second["pipeline"]["datamanager.inpainted.updates"], updates)


def test_opencv_training_on_the_spinnerf_layout(object_removal_capture, tmp_path):
    num_test = len(list((object_removal_capture / "images").glob("frame_eval_*.png")))
    config = harness.train("mald-nerf-small", object_removal_capture / "spinnerf", tmp_path, flags=[
        *TINY_FLAGS, "--pipeline.inpainter.model", "opencv", "--steps-per-save", "100"],
        dataparser=["spinnerf-data", "--num-test-views", str(num_test), "--mask-dilation", "3", "1"],
        max_num_iterations=3)
    state = _checkpoint(config)["pipeline"]
    stored = state["datamanager.inpainted.images"].float() / 255
    assert stored.shape[0] == 12 and stored.mean() > 0
    # ns-render dataset works on the run (inference mode: no inpainter, no training data loaded)
    images = harness.render_dataset(config, tmp_path / "renders", split="test")
    assert len(images) == num_test
