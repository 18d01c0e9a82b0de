"""Camera geometry of RenderDiffusion: rays match nerfstudio, Plücker moments, frames, turntables."""

from __future__ import annotations

import math

import torch
from nerfstudio.cameras.cameras import Cameras

from ns_diffusion_methods.methods.renderdiffusion.geometry import (
    frame_rotations,
    look_at,
    pixel_rays,
    plucker_coordinates,
    project_points,
    to_frame,
    turntable,
)


def _cameras(num: int = 2):
    positions = torch.tensor([[2.6, 0.0, 1.0], [0.3, -2.4, 1.5]])[:num]
    c2w = look_at(positions)
    intrinsics = torch.tensor([[33.0, 34.0, 16.0, 15.5], [30.0, 30.0, 16.5, 16.0]])[:num]
    return c2w, intrinsics


def test_pixel_rays_match_nerfstudio_cameras():
    c2w, intrinsics = _cameras()
    H, W = 12, 16
    origins, directions = pixel_rays(c2w, intrinsics, H, W)
    for b in range(2):
        fx, fy, cx, cy = intrinsics[b].tolist()
        cam = Cameras(camera_to_worlds=c2w[b: b + 1], fx=fx, fy=fy, cx=cx, cy=cy, width=W, height=H)
        bundle = cam.generate_rays(camera_indices=0, keep_shape=True)  # [H, W]
        torch.testing.assert_close(directions[b], bundle.directions.reshape(H * W, 3), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(origins[b], bundle.origins.reshape(H * W, 3), atol=1e-5, rtol=1e-5)


def test_pixel_subset_selects_the_same_rays():
    c2w, intrinsics = _cameras()
    _, all_dirs = pixel_rays(c2w, intrinsics, 8, 8)
    indices = torch.tensor([[0, 9, 63], [5, 6, 7]])
    _, sub_dirs = pixel_rays(c2w, intrinsics, 8, 8, pixel_indices=indices)
    torch.testing.assert_close(sub_dirs, torch.gather(all_dirs, 1, indices[..., None].expand(-1, -1, 3)))


def test_project_points_inverts_pixel_rays():
    c2w, intrinsics = _cameras()
    H = W = 32
    point = torch.tensor([[0.1, -0.2, 0.05]])
    uv, depth = project_points(point, c2w[0], intrinsics[0])
    col, row = uv[0]
    index = int(torch.floor(row)) * W + int(torch.floor(col))
    origins, directions = pixel_rays(c2w[:1], intrinsics[:1], H, W, pixel_indices=torch.tensor([[index]]))
    # the ray through the pixel containing the projection passes within half a pixel's footprint of the point
    to_point = point[0] - origins[0, 0]
    distance = torch.linalg.cross(to_point, directions[0, 0]).norm()
    assert depth.item() > 0
    assert distance < depth.item() / intrinsics[0, 0] * 0.75


def test_plucker_moment_is_the_same_for_every_point_on_the_ray():
    origins = torch.randn(10, 3)
    directions = torch.nn.functional.normalize(torch.randn(10, 3), dim=-1)
    shifted = origins + 2.7 * directions
    torch.testing.assert_close(plucker_coordinates(origins, directions), plucker_coordinates(shifted, directions))


def test_view_frame_puts_every_input_camera_in_the_same_orientation():
    c2w, _ = _cameras()
    rotations = frame_rotations(c2w, "view")
    in_frame = to_frame(c2w, rotations)
    torch.testing.assert_close(in_frame[:, :, :3], torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    # cameras look at the origin, so in their own frame they sit on the +z axis at their distance
    distances = c2w[:, :, 3].norm(dim=-1)
    torch.testing.assert_close(in_frame[:, :, 3], torch.stack([torch.zeros(2), torch.zeros(2), distances], -1),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(frame_rotations(c2w, "world"), torch.eye(3).expand(2, 3, 3))


def test_turntable_keeps_distance_and_elevation_and_looks_at_the_origin():
    c2w, _ = _cameras(1)
    views = turntable(c2w[0], 6)
    torch.testing.assert_close(views[0], c2w[0])
    positions = views[:, :, 3]
    torch.testing.assert_close(positions.norm(dim=-1), c2w[0, :, 3].norm().expand(6))
    torch.testing.assert_close(positions[:, 2], c2w[0, 2, 3].expand(6))
    # the optical axis (-z column) points at the origin
    forward = -views[:, :, 2]
    torch.testing.assert_close(forward, -positions / positions.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    azimuths = torch.atan2(positions[:, 1], positions[:, 0])
    steps = torch.remainder(azimuths[1:] - azimuths[:-1], 2 * math.pi)
    torch.testing.assert_close(steps, torch.full((5,), 2 * math.pi / 6), atol=1e-5, rtol=0)
