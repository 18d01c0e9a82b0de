"""mald-nerf on captures as users have them: straight from ``ns-process-data`` (``frame_00001.png``, no split lists),
RGBA or JPEG images, masks from a folder added with ``ns-diffusion add-masks``; then ``ns-eval``.

Each capture trains once (module-scoped fixtures, a few iterations of ``mald-nerf-small`` with the tiny flags); the
assertions on it share that run.
"""

import json
import math
from pathlib import Path

import harness
import numpy as np
import pytest
import torch
from PIL import Image
from user_captures import write_processed_capture

from ns_diffusion_methods.cli.main import main as ns_diffusion
from ns_diffusion_methods.errors import DataError

from .conftest import TINY_FLAGS

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow

FLAGS = [*TINY_FLAGS, "--steps-per-save", "100"]


def _train(capture: Path, output: Path) -> Path:
    """3 iterations of mald-nerf-small with one torch thread (the module fixtures run before the per-test one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return harness.train("mald-nerf-small", capture, output, flags=FLAGS, max_num_iterations=3)
    finally:
        torch.set_num_threads(threads)


def _checkpoint(config: Path) -> dict:
    return torch.load(harness.latest_checkpoint(config), map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def unmarked_rgba_run(object_removal_capture, tmp_path_factory):
    """An RGBA capture of the 12 views with the object, its frames carrying object_mask_path, nothing marked as an
    evaluation view; trained 3 iterations. Returns (capture, config.yml)."""
    folder = tmp_path_factory.mktemp("unmarked")
    capture = write_processed_capture(object_removal_capture, folder / "capture", frames_subset="train", rgba=True,
                                      mask_folder="masks", object_mask_entries=True)
    return capture, _train(capture, folder / "outputs")


def test_an_rgba_capture_without_evaluation_views_trains_on_every_frame(unmarked_rgba_run):
    _, config = unmarked_rgba_run
    state = _checkpoint(config)
    assert state["step"] == 2
    inpainted = state["pipeline"]["datamanager.inpainted.images"]
    assert inpainted.shape[0] == 12 and inpainted.shape[-1] == 3  # every frame trains, composited to RGB
    # the transparent corner of each image is composited on black (the default --alpha-color)
    corner = inpainted[:, :4, :4].float()
    assert corner.max() == 0
    assert all(torch.isfinite(v).all() for v in state["pipeline"].values() if v.is_floating_point())


def test_ns_eval_says_the_capture_has_no_object_free_views(unmarked_rgba_run, tmp_path):
    capture, config = unmarked_rgba_run
    output = tmp_path / "eval.json"
    with pytest.raises(DataError) as info:
        harness.evaluate(config, output_path=output)
    message = str(info.value)
    assert message.startswith(f"The capture {capture} has no object-free evaluation views")
    assert "test_filenames" in message and "\"eval\" in their file names" in message
    assert not output.exists()


@pytest.fixture(scope="module")
def masked_jpeg_run(object_removal_capture, tmp_path_factory):
    """All 20 frames as JPEGs; a segmenter's masks (0/255 PNG) for the 12 views with the object, none for the 8
    object-free views; ``ns-diffusion add-masks`` writes the capture, which trains 3 iterations.
    Returns (capture, config.yml)."""
    folder = tmp_path_factory.mktemp("masked")
    processed = write_processed_capture(object_removal_capture, folder / "processed", image_format="jpg",
                                        mask_folder="segmenter")
    masks = processed / "segmenter"
    for mask in sorted(masks.glob("*.png"))[12:]:  # the object-free views: the segmenter found nothing
        mask.unlink()
    capture = folder / "capture"
    assert ns_diffusion(["add-masks", "--data", str(processed), "--masks", str(masks), "--output", str(capture),
                         "--dilate", "3", "1"]) == 0
    return capture, _train(capture, folder / "outputs")


def test_a_capture_with_masks_from_a_folder_trains_and_evaluates_its_object_free_views(masked_jpeg_run, tmp_path):
    capture, config = masked_jpeg_run
    meta = json.loads((capture / "transforms.json").read_text())
    assert len(meta["train_filenames"]) == 12 and len(meta["test_filenames"]) == 8
    assert _checkpoint(config)["pipeline"]["datamanager.inpainted.images"].shape[0] == 12

    renders = tmp_path / "renders"
    results = harness.evaluate(config, output_path=tmp_path / "eval.json", render_output_path=renders)["results"]
    for key in ("psnr", "ssim"):
        assert math.isfinite(results[key]), key
    assert "masked_psnr" not in results  # the object-free views carry no mask of where the object was
    rendered = sorted(renders.glob("*_gt.png"))
    assert len(rendered) == 8
    # the scored ground truth is the object-free views: the 13th frame onwards of the capture
    first_eval = np.asarray(Image.open(capture / meta["test_filenames"][0]).convert("RGB")).astype(np.float32)
    assert np.abs(np.asarray(Image.open(rendered[0])).astype(np.float32) - first_eval).mean() < 1.0
