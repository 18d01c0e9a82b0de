"""``ns-viewer --load-config`` for every registered method, checked in headless Chromium.

Each method's small preset is trained for a few iterations on the test captures; ``ns-viewer`` serves the run on a free
loopback port, and the page is driven like a user would: it must get the training cameras (one frustum per training
image, at the dataparser's poses, with a thumbnail), show a rendered frame, move onto a training camera when its
frustum is clicked and render from there. Method additions are checked from the page too: the ``rgb_fixed`` output of
difix3d (picked in the output menu, then rendered), ssdnerf's "Training object" slider, and the training-data
state a run saved: mald-nerf's inpainted images on the training cameras, difix3d's pseudo-view frustums. A screenshot
of the view
from the clicked training camera is kept (see :func:`viewer_browser.save_artifact`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Dict, List

import harness
import numpy as np
import pytest
import yaml
from methods.difix3d.test_difix3d_methods import FAST as DIFIX3D_FAST
from methods.difix3d.test_difix3d_methods import ROUNDS as DIFIX3D_ROUNDS
from methods.mald_nerf.conftest import TINY_FLAGS as MALD_NERF_TINY
from methods.renderdiffusion.conftest import TINY_FLAGS as RENDERDIFFUSION_TINY
from methods.ssdnerf.test_ssdnerf_end_to_end import TINY_FLAGS as SSDNERF_TINY
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from viewer_browser import (
    DROPDOWN,
    FRAME,
    GUI_UPDATE,
    SLIDER,
    ViewerPage,
    block_means,
    check_click_moves_onto_the_camera,
    check_frame_shown,
    check_inpainted_thumbnails,
    console_script,
    decode_image,
    free_port,
    serving,
)

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow


@dataclass
class Run:
    """How a method's run is trained for these tests (the test captures of tests/conftest.py, tiny sizes)."""

    data: str  # capture fixture
    flags: List[str]
    iterations: int
    dataparser: List[str] = field(default_factory=list)


RUNS: Dict[str, Run] = {
    "difix3d-nerfacto-small": Run("sparse_views_capture",
                                  [*DIFIX3D_FAST["difix3d-nerfacto-small"], *DIFIX3D_ROUNDS], iterations=4),
    "difix3d-splat-small": Run("sparse_views_capture", [*DIFIX3D_FAST["difix3d-splat-small"], *DIFIX3D_ROUNDS],
                               iterations=4),
    "mald-nerf-small": Run("object_removal_capture", [*MALD_NERF_TINY, "pipeline.inpainter:opencv"],
                           iterations=2),
    "ssdnerf-small": Run("objects_dataset", SSDNERF_TINY, iterations=2, dataparser=["srn-data"]),
    "ssdnerf-uncond-small": Run("objects_dataset", SSDNERF_TINY, iterations=2, dataparser=["srn-data"]),
    "renderdiffusion-small": Run("objects_dataset",
                                 [*RENDERDIFFUSION_TINY, "--pipeline.model.encoder.triplane-resolution", "32"],
                                 iterations=2, dataparser=["srn-data"]),
}


def test_every_registered_method_has_a_browser_test():
    registered = {e.name for e in entry_points(group="nerfstudio.method_configs")
                  if e.value.startswith("ns_diffusion_methods.")}
    # a method and its -small preset share all code: the preset stands for both
    assert {name.removesuffix("-small") for name in registered} == {m.removesuffix("-small") for m in RUNS}


def training_cameras(config_path: Path) -> np.ndarray:
    """The run's training camera centres ``[N, 3]`` in the viewer's frame (from its dataparser, as the viewer)."""
    config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    dataparser = config.pipeline.datamanager.dataparser
    if config.pipeline.datamanager.data is not None:
        dataparser.data = config.pipeline.datamanager.data  # what the datamanager does
    outputs = dataparser.setup().get_dataparser_outputs("train")
    return outputs.cameras.camera_to_worlds[:, :3, 3].double().numpy() * VISER_NERFSTUDIO_SCALE_RATIO


def check_training_cameras(page: ViewerPage, config_path: Path) -> None:
    """One frustum per training image, at its camera's centre, with a thumbnail of the frustum's aspect."""
    expected = training_cameras(config_path)
    frustums = page.wait_for(lambda: len(page.frustums("/cameras")) >= len(expected) and page.frustums("/cameras"),
                             f"{len(expected)} training camera frustums")
    assert sorted(frustums) == [f"/cameras/camera_{i:05d}" for i in range(len(expected))]
    for index, (name, frustum) in enumerate(sorted(frustums.items())):
        np.testing.assert_allclose(frustum["position"], expected[index], atol=1e-3, err_msg=name)
        thumbnail = decode_image(frustum["image_binary"])
        assert thumbnail.shape[0] == 100 and thumbnail.std() > 0.01, name
        assert abs(thumbnail.shape[1] / thumbnail.shape[0] - frustum["aspect"]) < 0.05, name


# ---------------------------------------------------------------------------------------- method additions
def check_rgb_fixed(page: ViewerPage, rgb: np.ndarray) -> None:
    """difix3d: `rgb_fixed` is in the output menu; picking it renders the fixed image (differs from `rgb`)."""
    output = page.wait_for(lambda: "rgb_fixed" in page.gui(DROPDOWN, "Output type")["options"] and
                           page.gui(DROPDOWN, "Output type"), "the output type options")
    assert output["value"] == "rgb"
    start = time.monotonic()
    page.select(output, "rgb_fixed")
    page.wait_for(lambda: [m for m in page.did(GUI_UPDATE, since=start)
                           if m["id"] == output["id"] and m["updates"].get("value") == "rgb_fixed"],
                  "the page's choice of rgb_fixed", timeout=10)

    def difference() -> float:
        latest = decode_image(page.got(FRAME, since=start)[-1]["rgb_bytes"])
        return float(np.abs(block_means(latest) - block_means(rgb)).mean())

    # a frame of rgb rendered before the choice reached the viewer may still arrive, and the first rgb_fixed frame
    # waits for the fixer to load: wait for a fixed frame, then for the page to settle on it
    page.wait_for(lambda: page.got(FRAME, since=start) and difference() > 0.02, "a frame of rgb_fixed")
    page.wait_for_quiet(FRAME)
    assert difference() > 0.02, f"the rgb_fixed frame is the rgb frame ({difference():.3f})"


def check_training_object_slider(page: ViewerPage, _rgb: np.ndarray) -> None:
    """ssdnerf: the "Training object" slider spans the training objects; moving it re-renders."""
    slider = page.gui(SLIDER, "Training object")
    assert (slider["min"], slider["max"], slider["value"]) == (0, 7, 0)  # objects_dataset: 8 training objects
    start = time.monotonic()
    page.page.locator(f"[id='{slider['id']}'] [role='slider']").press("ArrowRight")  # as a user's keyboard does
    page.wait_for(lambda: [m for m in page.did(GUI_UPDATE, since=start)
                           if m["id"] == slider["id"] and m["updates"].get("value") == 1],
                  "the slider moved to object 1", timeout=10)
    page.wait_for(lambda: page.got(FRAME, since=start), "a frame of training object 1")


def check_loaded_inpainted_thumbnails(page: ViewerPage, config_path: Path) -> None:
    """mald-nerf: the training cameras show the inpainted images saved in the run's checkpoint, not the captured
    ones (drawn by the pipeline's ``on_viewer_scene`` after nerfstudio's own thumbnails)."""
    import torch

    state = torch.load(harness.latest_checkpoint(config_path), map_location="cpu", weights_only=False)
    check_inpainted_thumbnails(page, state, config_path)


def check_pseudo_view_frustums(page: ViewerPage, config_path: Path) -> None:
    """difix3d: the pseudo views saved in the run's checkpoint are drawn at their poses (``on_viewer_scene``)."""
    import torch
    from methods.difix3d.test_difix3d_methods import pseudo_views_of

    views = pseudo_views_of(torch.load(harness.latest_checkpoint(config_path), map_location="cpu",
                                       weights_only=False))
    assert len(views) > 0
    frustums = page.wait_for(lambda: len(page.frustums("/pseudo_views")) == len(views) and
                             page.frustums("/pseudo_views"), "the pseudo-view frustums")
    for index in range(len(views)):
        centre = views.poses[index, :, 3].double().numpy() * VISER_NERFSTUDIO_SCALE_RATIO
        np.testing.assert_allclose(frustums[f"/pseudo_views/view_{index:03d}"]["position"], centre, atol=1e-3)


#: checks of what a loaded run's pipeline draws itself (its checkpointed training-data state)
STATE_CHECKS: Dict[str, Callable[[ViewerPage, Path], None]] = {
    "mald-nerf-small": check_loaded_inpainted_thumbnails,
    "difix3d-nerfacto-small": check_pseudo_view_frustums,
    "difix3d-splat-small": check_pseudo_view_frustums,
}


EXTRA_CHECKS: Dict[str, Callable[[ViewerPage, np.ndarray], None]] = {
    "difix3d-nerfacto-small": check_rgb_fixed,
    "difix3d-splat-small": check_rgb_fixed,
    "ssdnerf-small": check_training_object_slider,
}


@pytest.mark.parametrize("method", list(RUNS))
def test_ns_viewer_shows_the_run_in_a_browser(method: str, browser: Any, request, tmp_path: Path):
    run = RUNS[method]
    config = harness.train(method, request.getfixturevalue(run.data), tmp_path / "runs", run.flags, run.dataparser,
                           max_num_iterations=run.iterations)
    port = free_port()
    command = [console_script("ns-viewer"), "--load-config", str(config),
               "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]
    with serving(command, port, tmp_path / "ns-viewer.log"):
        with ViewerPage(browser, f"http://127.0.0.1:{port}/", tmp_path / f"failed-{method}.png") as page:
            check_training_cameras(page, config)
            if method in STATE_CHECKS:
                STATE_CHECKS[method](page, config)
            check_frame_shown(page, tmp_path / f"{method}-default-view.png")
            rgb = check_click_moves_onto_the_camera(page, tmp_path / f"viewer-{method}.png")
            if method in EXTRA_CHECKS:
                EXTRA_CHECKS[method](page, rgb)
