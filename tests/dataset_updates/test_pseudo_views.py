"""Progressive pseudo views: the schedule without a renderer, state round trips, a full round with a real (splat)
renderer and the identity fixer, camera-path targets, viewer frustums. (The pose maths: tests/geometry.)"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ns_diffusion_methods.dataset_updates.pseudo_views import (
    ProgressiveSchedule,
    PseudoViews,
    load_camera_path,
    run_fix_round,
    show_in_viewer,
    subsample_cameras,
)
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.identity import IdentityFixerConfig
from ns_diffusion_methods.geometry.poses import nearest_pose_indices


def rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose(angle: float, translation) -> torch.Tensor:
    return torch.cat([rot_z(angle), torch.tensor(translation, dtype=torch.float32)[:, None]], dim=1)


def training_setup():
    training = torch.stack([pose(0.0, [float(i), 0.0, 0.0]) for i in range(5)])  # a line of cameras
    intrinsics = torch.tensor([[10.0, 10.0, 4.0, 3.0]]).repeat(5, 1)
    intrinsics[3, 0] = 11.0  # tell the cameras apart by their fx
    sizes = torch.tensor([[6, 8]]).repeat(5, 1)
    targets = torch.stack([pose(0.0, [3.2, 2.0, 0.0]), pose(0.8, [0.0, -3.0, 0.0])])
    return training, intrinsics, sizes, targets


def test_schedule_rounds_approach_targets_strictly():
    training, intrinsics, sizes, targets = training_setup()
    schedule = ProgressiveSchedule(steps_per_fix=10, start_step=5, step_size=0.5)
    assert [s for s in range(40) if schedule.is_due(s)] == [5, 15, 25, 35]
    state = schedule.initialize_state(training, intrinsics, sizes, targets)
    assert torch.equal(state.poses[0], training[3]) and torch.equal(state.poses[1], training[0])
    assert float(state.intrinsics[0, 0]) == 11.0  # the starting camera's intrinsics
    distances = [state.distances_to_targets()]
    for round_index in range(12):
        schedule.advance(state, training, step=5 + 10 * round_index)
        distances.append(state.distances_to_targets())
        assert torch.equal(state.reference_indices, nearest_pose_indices(state.poses, training))
    assert int(state.rounds) == 12 and int(state.last_round_step) == 115
    assert bool(state.arrived.all())
    for i in range(2):
        walk = [float(d[i]) for d in distances]
        arrival = next(k for k, d in enumerate(walk) if d == 0.0)
        assert all(a > b for a, b in zip(walk[:arrival], walk[1:arrival + 1]))  # strictly closer every round
        assert all(d == 0.0 for d in walk[arrival:])  # then stays on the target
    with pytest.raises(ValueError, match="steps_per_fix"):
        ProgressiveSchedule(steps_per_fix=0)


def test_pseudo_views_state_round_trip_resizes_on_load():
    training, intrinsics, sizes, targets = training_setup()
    schedule = ProgressiveSchedule(steps_per_fix=1)
    state = schedule.initialize_state(training, intrinsics, sizes, targets)
    schedule.advance(state, training, step=7)
    state.images.set(1, torch.rand(6, 8, 3), step=7)
    state.accumulations.set(1, torch.rand(6, 8, 1), step=7)
    saved = {k: v.clone() for k, v in state.state_dict().items()}
    restored = PseudoViews.empty()  # an evaluation run starts with none
    restored.load_state_dict(saved)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert len(restored) == 2 and restored.filled.tolist() == [False, True]
    cameras = restored.cameras([1])
    assert cameras.metadata is None  # no cam_idx: per-training-image parameters skip pseudo cameras
    assert int(cameras.width[0]) == 8 and int(cameras.height[0]) == 6
    torch.testing.assert_close(cameras.camera_to_worlds[0], state.poses[1])


class SplatScene(nn.Module):
    """A renderer with nerfstudio's ``get_outputs_for_camera`` contract: a few Gaussians, rasterized in torch."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.means = nn.Parameter((torch.rand(30, 3, generator=g) - 0.5) * 2 + torch.tensor([1.5, 0.0, -3.0]))
        self.colors = nn.Parameter(torch.rand(30, 3, generator=g))
        self.renders = 0

    def get_outputs_for_camera(self, camera):
        from ns_diffusion_methods.methods.difix3d.model import world_to_camera
        from ns_diffusion_methods.rendering import torch_rasterization

        assert not self.training  # pseudo views are rendered in eval mode
        self.renders += 1
        n = self.means.shape[0]
        rgb, alpha, _ = torch_rasterization(self.means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                                            torch.full((n, 3), 0.3), torch.full((n,), 0.9), self.colors,
                                            world_to_camera(camera.camera_to_worlds), camera.get_intrinsics_matrices(),
                                            int(camera.width), int(camera.height))
        return {"rgb": rgb[0], "accumulation": alpha[0], "depth": alpha[0]}


def test_fix_round_renders_fixes_and_stores_every_view():
    training, intrinsics, sizes, targets = training_setup()
    schedule = ProgressiveSchedule(steps_per_fix=1)
    state = schedule.initialize_state(training, intrinsics, sizes, targets)
    schedule.advance(state, training, step=3)
    model = SplatScene()
    fixer = IdentityFixerConfig().setup()
    training_images = torch.rand(5, 6, 8, 3)
    requested = []

    def reference(index):
        requested.append(index)
        return training_images[index]

    result = run_fix_round(model, state, fixer, reference, step=3, batch_size=1, description=None)
    assert model.training and model.renders == 2
    assert sorted(requested) == sorted(nearest_pose_indices(state.poses, training).tolist())
    assert state.filled.all() and state.images.last_step.tolist() == [3, 3]
    for index in range(2):
        expected = model.eval().get_outputs_for_camera(state.cameras([index]))
        model.train()
        torch.testing.assert_close(state.image(index), expected["rgb"].clamp(0, 1), atol=1 / 255, rtol=0)
        torch.testing.assert_close(state.accumulation(index), expected["accumulation"], atol=1 / 255, rtol=0)
        torch.testing.assert_close(result.fixed[index], expected["rgb"].clamp(0, 1))
    assert float(state.accumulations.images.float().max()) > 0  # the scene is in view


def test_camera_path_targets(tmp_path):
    c2w = [[1.0, 0, 0, 0.5], [0, 1.0, 0, 0.0], [0, 0, 1.0, 2.0], [0, 0, 0, 1.0]]
    path = {"render_height": 30, "render_width": 40,
            "camera_path": [{"camera_to_world": sum(c2w, []), "fov": 60.0} for _ in range(7)]}
    file = tmp_path / "path.json"
    file.write_text(json.dumps(path))
    cameras = load_camera_path(file, max_targets=3)
    assert cameras.shape[0] == 3
    torch.testing.assert_close(cameras.camera_to_worlds[0], torch.tensor(c2w)[:3])
    assert subsample_cameras(cameras, None).shape[0] == 3
    with pytest.raises(DataError, match="does not exist"):
        load_camera_path(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a nerfstudio camera path"):
        load_camera_path(tmp_path / "bad.json")


def test_pseudo_cameras_are_drawn_as_frustums_in_the_viewer():
    import socket
    from types import SimpleNamespace

    import viser
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    training, intrinsics, sizes, targets = training_setup()
    schedule = ProgressiveSchedule(steps_per_fix=1)
    state = schedule.initialize_state(training, intrinsics, sizes, targets)
    schedule.advance(state, training, step=1)
    state.images.set(0, torch.rand(6, 8, 3), step=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port)
    try:
        viewer = SimpleNamespace(viser_server=server)  # the nerfstudio Viewer's attribute the drawing uses
        handles = show_in_viewer(viewer, state)
        assert sorted(handles) == ["/pseudo_views/view_000", "/pseudo_views/view_001"]
        for index, handle in enumerate(handles.values()):
            expected = state.poses[index, :, 3].numpy() * VISER_NERFSTUDIO_SCALE_RATIO
            assert handle.position == pytest.approx(expected, abs=1e-4)
        assert show_in_viewer(None, state) == {}  # no viewer (e.g. --vis tensorboard): nothing to draw
    finally:
        server.stop()
