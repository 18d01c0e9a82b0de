"""Visibility-aware masks in the mald-nerf pipeline: when they are computed, what they change, and that they persist.

The geometry itself (which pixels other views see) is tested by hand in tests/geometry/test_visibility.py; here the
seen pixels are fixed (the left half of each view's object mask) so that the pipeline's use of them is exact.
"""

import pytest
import torch

from ns_diffusion_methods.errors import DataError

from .conftest import build_pipeline

FLAGS = ["--pipeline.visibility-aware-masks", "True", "--pipeline.visibility-step", "2", "pipeline.inpainter:opencv"]


def _left_half(masks: torch.Tensor) -> torch.Tensor:
    """The object pixels left of each view's object centre column."""
    seen = torch.zeros_like(masks)
    for index, mask in enumerate(masks):
        cols = mask.nonzero()[:, 1]
        centre = int(cols.float().mean())
        seen[index, :, :centre] = mask[:, :centre]
    return seen


@pytest.fixture
def fixed_seen(monkeypatch):
    """seen_in_other_views replaced by the left half of the masks; records its calls."""
    import ns_diffusion_methods.geometry.visibility as visibility

    calls = []

    def fake(hole_points, depths, masks, camera_to_worlds, intrinsics, tolerance):
        assert [p.shape[0] for p in hole_points] == masks.sum(dim=(1, 2)).tolist()
        calls.append({"depths": depths.shape, "tolerance": tolerance, "masks": masks.clone()})
        return _left_half(masks)

    monkeypatch.setattr(visibility, "seen_in_other_views", fake)
    return calls


def _quantised(image):
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def test_seen_pixels_leave_the_inpainting_mask_after_the_visibility_step(object_removal_capture, fixed_seen):
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    dm = pipeline.datamanager
    pipeline.start_training(0, 10)
    assert "visibility-aware masks: the pixels other views see are computed at step 2" in pipeline.plan(0, 10)
    assert not pipeline.visibility_ready() and dm.seen_mask(0) is None
    _, losses, _ = pipeline.get_train_loss_dict(0)
    assert "adversarial_loss" not in losses and "pixel_loss" in losses  # the adversarial terms wait
    assert pipeline.visibility_after_iteration(0) is False  # due before step 2, i.e. after iteration 1
    assert pipeline.visibility_after_iteration(1) is True
    assert len(fixed_seen) == 1 and fixed_seen[0]["tolerance"] == 0.05
    n, h, w = dm.object_masks.shape
    assert fixed_seen[0]["depths"] == (n, h, w) and torch.equal(fixed_seen[0]["masks"], dm.object_masks)
    seen = _left_half(dm.object_masks)
    assert seen.any() and pipeline.visibility_ready()
    assert torch.equal(dm.inpaint_masks, dm.object_masks & ~seen)
    assert all(torch.equal(dm.seen_mask(i), seen[i]) for i in range(n))
    assert pipeline.visibility_after_iteration(5) is False  # computed once
    # re-inpainted: captured pixels kept outside the object, the render in the seen part
    assert dm.inpainted.updates.tolist() == [2] * n and dm.inpainted.last_step.tolist() == [2] * n
    from ns_diffusion_methods.dataset_updates import render_camera_outputs

    for index in (0, n - 1):
        stored = dm.inpainted.images[index]
        outside = ~dm.object_mask(index)
        assert torch.equal(stored[outside], _quantised(dm.captured_image(index))[outside])
        render = render_camera_outputs(pipeline.model, dm.train_dataset.cameras[index:index + 1], ("rgb",))["rgb"]
        difference = (stored[seen[index]].int() - _quantised(render)[seen[index]].int()).abs()
        assert difference.max() <= 1
    # patches now overlap the smaller mask only, and the discriminator sees black outside it
    state = dm.generator.get_state()
    _, batch = dm.next_train(2)
    dm.generator.set_state(state)
    size, offset, count = batch["patch_size"], batch["num_single_rays"], batch["patch_corners"].shape[0]
    patch_mask = batch["inpaint_mask"][offset:].reshape(count, size * size)
    assert patch_mask.any(dim=1).all()
    assert torch.equal(batch["inpaint_mask"], batch["object_mask"] & ~seen[tuple(batch["indices"].T)][:, None])
    inputs = []
    handle = pipeline.discriminator.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    _, losses, _ = pipeline.get_train_loss_dict(2)
    handle.remove()
    assert "adversarial_loss" in losses
    outside = ~batch["inpaint_mask"][offset:].reshape(count, size, size)[:, None].expand(-1, 3, -1, -1)
    assert all(torch.equal(x[outside], torch.zeros_like(x[outside])) for x in inputs)


def test_seen_pixels_are_checkpointed_and_restored(object_removal_capture, fixed_seen):
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    pipeline.start_training(0, 10)
    pipeline.visibility_after_iteration(1)
    state = pipeline.state_dict()
    assert any(key.startswith("datamanager.seen.") for key in state)
    restored = build_pipeline(object_removal_capture, FLAGS)
    restored.load_state_dict(state)
    restored.start_training(5, 10)  # a resumed run: nothing is computed again
    assert len(fixed_seen) == 1
    assert "visibility-aware masks: restored from the checkpoint" in restored.plan(5, 10)
    assert torch.equal(restored.datamanager.inpaint_masks, pipeline.datamanager.inpaint_masks)
    assert restored.visibility_ready()


def test_a_resumed_run_past_the_step_computes_them_when_it_starts(object_removal_capture, fixed_seen):
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    pipeline.start_training(4, 10)  # e.g. resumed from a checkpoint written before the feature was turned on
    assert len(fixed_seen) == 1 and pipeline.visibility_ready()


def test_everything_seen_leaves_no_adversarial_patches(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    dm = pipeline.datamanager
    pipeline.start_training(0, 10)
    dm.set_seen_masks(dm.object_masks.clone(), step=2)
    assert dm.patch_sampler is None and not dm.inpaint_masks.any()
    _, batch = dm.next_train(3)
    assert batch["patch_corners"].shape[0] == 0
    _, losses, _ = pipeline.get_train_loss_dict(3)
    assert "adversarial_loss" not in losses and "pixel_loss" in losses
    # nothing to inpaint: the view is the captured image with the render where the object was
    assert pipeline.inpaint_view(0, None).shape == dm.captured_image(0).shape


def test_off_by_default_and_refused_for_fisheye_cameras(object_removal_capture):
    from nerfstudio.cameras.cameras import CameraType

    plain = build_pipeline(object_removal_capture, ["pipeline.inpainter:opencv"])
    plain.start_training(0, 10)
    assert "visibility-aware masks: off" in plain.plan(0, 10) and plain.visibility_ready()
    assert plain.visibility_after_iteration(5000) is False
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    cameras = pipeline.datamanager.train_dataset.cameras
    cameras.camera_type = torch.full_like(cameras.camera_type, CameraType.FISHEYE.value)
    with pytest.raises(DataError, match="FISHEYE cameras: turn it off"):
        pipeline.start_training(0, 10)


def test_the_real_visibility_runs_on_the_pipelines_own_depth(object_removal_capture):
    """Without the stand-in: the pipeline's depth renders, rays and cameras reach seen_in_other_views and its result is
    stored (a subset of each view's object mask)."""
    pipeline = build_pipeline(object_removal_capture, FLAGS)
    dm = pipeline.datamanager
    pipeline.start_training(0, 10)
    assert pipeline.visibility_after_iteration(1) is True
    seen = torch.stack([dm.seen_mask(i) for i in range(dm.num_train_images)])
    assert not (seen & ~dm.object_masks).any()
    assert torch.equal(dm.inpaint_masks, dm.object_masks & ~seen)
