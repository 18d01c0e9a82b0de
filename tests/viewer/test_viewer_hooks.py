"""What nerfstudio's viewer calls on a loaded run, without a browser (the browser tests skip where no Chromium is).

- ``Viewer.__init__`` reads every attribute of the pipeline looking for GUI elements (``viewer.utils.parse_object``);
  none may raise in a loaded (``test_mode="test"``) mald-nerf pipeline, which has no inpainter.
- The render thread calls ``model.get_outputs_for_camera``, which calls ``forward(ray_bundle=...)`` by keyword; an
  untrained renderdiffusion model renders its empty scene there, with the depth of the box's far side (the viewer
  composites its training cameras by that depth).
"""

from __future__ import annotations

import torch
from methods.mald_nerf.conftest import build_pipeline
from methods.renderdiffusion.test_rd_model import _config as renderdiffusion_config


def test_the_viewer_can_scan_a_loaded_mald_nerf_pipeline(object_removal_capture):
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement

    pipeline = build_pipeline(object_removal_capture, test_mode="test")
    assert "inpainter" not in pipeline._training_only
    assert parse_object(pipeline, ViewerElement, "Custom Elements") == []


def test_an_untrained_renderdiffusion_model_renders_the_empty_scene_for_the_viewer():
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import SceneBox

    model = renderdiffusion_config().setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])),
                                           num_train_data=1, image_size=16)
    model.eval()
    distance = 2.6
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, distance]])  # looking down -z at the origin
    camera = Cameras(camera_to_worlds=c2w[None], fx=20.0, fy=20.0, cx=8.0, cy=8.0, width=16, height=16)
    outputs = model.get_outputs_for_camera(camera)
    background = model.sampling_denoiser.background.clamp(0, 1)
    assert torch.allclose(outputs["rgb"], background.expand(16, 16, 3))
    assert torch.all(outputs["accumulation"] == 0)
    # the central ray leaves the box [-1, 1]^3 at z = -1
    assert abs(float(outputs["depth"][8, 8, 0]) - (distance + 1)) < 0.05


def test_the_viewer_calls_the_pipelines_scene_hook_after_drawing_its_scene():
    """nerfstudio's Viewer.init_scene is wrapped (once) so that a pipeline's on_viewer_scene runs after it."""
    from types import ModuleType

    from nerfstudio.viewer.viewer import Viewer as NerfstudioViewer

    from ns_diffusion_methods.compat.viewer import _patch_viewer

    assert getattr(NerfstudioViewer.init_scene, "_ns_diffusion_hooked", False)  # the package's import patched it

    calls = []

    class Viewer:
        def __init__(self, pipeline):
            self.pipeline = pipeline

        def init_scene(self, **kwargs):
            calls.append(("init", kwargs))

    class Pipeline:
        def on_viewer_scene(self, viewer):
            calls.append(("hook", viewer))

    module = ModuleType("fake_viewer")
    module.Viewer = Viewer
    _patch_viewer(module)
    _patch_viewer(module)  # a second patch does not wrap twice
    viewer = Viewer(Pipeline())
    viewer.init_scene(train_state="completed")
    assert calls == [("init", {"train_state": "completed"}), ("hook", viewer)]
    Viewer(object()).init_scene()  # a pipeline without the hook: nerfstudio's scene only
    assert calls[-1] == ("init", {})
