"""``ns-train METHOD --vis viewer``: the live viewer of a training run, checked in headless Chromium.

What the methods add to the viewer while they train is checked from the page against the run's final checkpoint:

- mald-nerf: the training cameras show the current inpainted images (not the captured ones); clicking one of the
  replaced frustums still moves the page's camera onto it;
- difix3d: the pseudo cameras are drawn as frustums at their poses, with their fixed images.

Training keeps the viewer open when it is done (``--viewer.quit-on-train-completion False``); the test reads the
checkpoint written at the end of training and stops the process.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import harness
import numpy as np
import pytest
import torch
from methods.difix3d.test_difix3d_methods import FAST as DIFIX3D_FAST
from methods.difix3d.test_difix3d_methods import ROUNDS as DIFIX3D_ROUNDS
from methods.difix3d.test_difix3d_methods import pseudo_views_of
from methods.mald_nerf.conftest import TINY_FLAGS as MALD_NERF_TINY
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from viewer_browser import (
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


def live_training(method: str, data: Path, output: Path, flags: List[str], iterations: int, port: int):
    """``ns-train METHOD ... --vis viewer`` serving on ``port``, the viewer kept open after training; ``flags`` come
    last, so they may end with a component subcommand and its flags (tyro applies flags to the subcommand they
    follow)."""
    command = [console_script("ns-train"), method, *harness.BASE_FLAGS,
               "--max-num-iterations", str(iterations),
               "--vis", "viewer", "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
               "--viewer.quit-on-train-completion", "False",
               "--output-dir", str(output), "--timestamp", "run", "--data", str(data), *flags]
    return serving(command, port, output.parent / f"ns-train-{method}.log")


def final_checkpoint(page: ViewerPage, output: Path, iterations: int) -> Dict[str, Any]:
    """The checkpoint written at the end of training (the page keeps running while training finishes)."""
    name = f"step-{iterations - 1:09d}.ckpt"

    def loaded() -> Optional[Dict[str, Any]]:
        for path in output.glob(f"*/*/run/nerfstudio_models/{name}"):
            with contextlib.suppress(Exception):  # still being written
                return torch.load(path, map_location="cpu", weights_only=False)
        return None

    return page.wait_for(loaded, f"the end of training ({name})", timeout=180)


def test_live_mald_nerf_shows_the_inpainted_images_on_the_training_cameras(browser, object_removal_capture,
                                                                         tmp_path):
    iterations, port, output = 2, free_port(), tmp_path / "runs"
    flags = [*MALD_NERF_TINY, "pipeline.inpainter:opencv"]
    with live_training("mald-nerf-small", object_removal_capture, output, flags, iterations, port):
        with ViewerPage(browser, f"http://127.0.0.1:{port}/", tmp_path / "failed-mald-nerf-live.png") as page:
            state = final_checkpoint(page, output, iterations)
            check_inpainted_thumbnails(page, state, next(output.glob("*/*/run/config.yml")))
            check_frame_shown(page, tmp_path / "mald-nerf-live-default-view.png")
            check_click_moves_onto_the_camera(page, tmp_path / "viewer-mald-nerf-small-live.png")


def test_live_difix3d_draws_the_pseudo_views(browser, sparse_views_capture, tmp_path):
    method, iterations, port, output = "difix3d-nerfacto-small", 4, free_port(), tmp_path / "runs"
    flags = [*DIFIX3D_FAST[method], *DIFIX3D_ROUNDS]  # 2 pseudo views, a fix round at step 3
    with live_training(method, sparse_views_capture, output, flags, iterations, port):
        with ViewerPage(browser, f"http://127.0.0.1:{port}/", tmp_path / "failed-difix3d-live.png") as page:
            views = pseudo_views_of(final_checkpoint(page, output, iterations))
            assert len(views) == 2 and bool(views.filled.all())
            frustums = page.wait_for(lambda: len(page.frustums("/pseudo_views")) == len(views) and
                                     page.frustums("/pseudo_views"), "the pseudo-view frustums")
            for index in range(len(views)):
                frustum = frustums[f"/pseudo_views/view_{index:03d}"]
                centre = views.poses[index, :, 3].double().numpy() * VISER_NERFSTUDIO_SCALE_RATIO
                np.testing.assert_allclose(frustum["position"], centre, atol=1e-3)
                shown = decode_image(frustum["image_binary"])
                height, width = (int(v) for v in views.image_sizes[index])
                assert abs(shown.shape[1] / shown.shape[0] - width / height) < 0.05
                fixed = views.image(index).numpy()
                assert np.abs(block_means(shown) - block_means(fixed)).mean() < 0.03, index
            check_frame_shown(page, tmp_path / "difix3d-live-default-view.png")
