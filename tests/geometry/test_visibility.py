"""Pinhole projection and cross-view visibility of masked pixels, against hand computations and nerfstudio's rays."""

import pytest
import torch

from ns_diffusion_methods.geometry.visibility import project_points, seen_in_other_views, surface_points_of

FX, CX, SIZE = 10.0, 10.0, 20  # 20x20 px, focal 10 px, principal point at the centre
PLANE_Z = -5.0  # a wall facing both cameras, 5 units in front of them


def _c2w(x: float) -> torch.Tensor:
    """A camera at (x, 0, 0) looking down -z (OpenGL frame, identity rotation)."""
    matrix = torch.zeros(3, 4)
    matrix[:, :3] = torch.eye(3)
    matrix[0, 3] = x
    return matrix


def _rays(x: float):
    """Origins and unit directions through the pixel centres (nerfstudio: +0.5, y up)."""
    rows, cols = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    directions = torch.stack([(cols - CX) / FX, -(rows - CX) / FX, -torch.ones_like(rows)], dim=-1)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = torch.tensor([x, 0.0, 0.0]).expand(SIZE, SIZE, 3)
    return origins, directions


def test_projection_by_hand():
    c2w = _c2w(0.0)
    points = torch.tensor([[0.0, 0.0, -2.0], [0.4, -0.4, -2.0], [1.0, 1.0, -2.0], [0.0, 0.0, 2.0], [3.0, 0.0, -4.0]])
    row, col, distance, inside = project_points(points, c2w, FX, FX, CX, CX, SIZE, SIZE)
    # (0, 0, -2): the principal point (10, 10); (0.4, -0.4, -2): u = 10 + 10 * 0.2 = 12, v = 10 + 10 * 0.2 = 12
    assert (row[:2].tolist(), col[:2].tolist()) == ([10, 12], [10, 12])
    # (1, 1, -2): u = 15, v = 5, inside; (0, 0, 2) is behind the camera; (3, 0, -4): u = 17.5 -> column 17
    assert inside.tolist() == [True, True, True, False, True]
    assert (row[2].item(), col[2].item(), col[4].item()) == (5, 15, 17)
    assert distance[4].item() == pytest.approx(5.0)  # Euclidean, not the z depth (4)
    # a camera moved right by 2 sees the first point 10 px further left: u = 10 + 10 * (-2) / 2 = 0
    row, col, _, inside = project_points(points[:1], _c2w(2.0), FX, FX, CX, CX, SIZE, SIZE)
    assert inside.item() and col.item() == 0


def test_round_trip_with_nerfstudio_rays():
    from nerfstudio.cameras.cameras import Cameras

    c2w = torch.tensor([[0.8, 0.0, 0.6, 0.3], [0.0, 1.0, 0.0, -0.2], [-0.6, 0.0, 0.8, 1.5]])
    cameras = Cameras(camera_to_worlds=c2w[None], fx=12.0, fy=9.0, cx=7.3, cy=5.1, width=16, height=11)
    rays = cameras.generate_rays(camera_indices=0, keep_shape=True)
    depth = torch.linspace(0.5, 3.0, 16 * 11).reshape(11, 16, 1)
    points = (rays.origins + depth * rays.directions).reshape(-1, 3)
    row, col, distance, inside = project_points(points, c2w, 12.0, 9.0, 7.3, 5.1, 16, 11)
    rows, cols = torch.meshgrid(torch.arange(11), torch.arange(16), indexing="ij")
    assert inside.all()
    assert torch.equal(row, rows.reshape(-1)) and torch.equal(col, cols.reshape(-1))  # every point returns home
    assert torch.allclose(distance, depth.reshape(-1), atol=1e-5)  # nerfstudio's depth is the distance


def _points(origins, directions, depths, masks):
    return [surface_points_of(o, d, t, m) for o, d, t, m in zip(origins, directions, depths, masks)]


def _scene():
    """Two cameras 2.5 apart facing the wall: a wall point seen at column c by camera 0 is at column c - 5 in camera
    1 (shift 10 px * 2.5 / 5)."""
    o0, d0 = _rays(0.0)
    o1, d1 = _rays(2.5)
    depth0 = PLANE_Z / d0[..., 2]  # distance along each unit ray to the wall
    depth1 = PLANE_Z / d1[..., 2]
    return (torch.stack([o0, o1]), torch.stack([d0, d1]), torch.stack([depth0, depth1]),
            torch.stack([_c2w(0.0), _c2w(2.5)]), torch.tensor([[FX, FX, CX, CX]] * 2))


def test_seen_by_hand_with_masks_occluders_and_borders():
    origins, directions, depths, c2ws, intrinsics = _scene()
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, 8:12, 2:8] = True  # camera 0's hole: columns 2-7 -> columns -3..2 in camera 1
    masks[1, :, 1] = True  # camera 1 masks its column 1 (camera 0's column 6)
    depths = depths.clone()
    depths[1, :, 2] = 3.0  # something stands in front of the wall in camera 1's column 2 (camera 0's column 7)
    seen = seen_in_other_views(_points(origins, directions, depths, masks), depths, masks, c2ws, intrinsics,
                               tolerance=0.05)
    expected = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    expected[0, 8:12, 5] = True  # columns 2-4 fall off camera 1's image; 6 is masked there; 7 is occluded there
    # camera 1's masked column 1 is camera 0's column 6: seen, except rows 8-11 (camera 0's own hole)
    expected[1, :, 1] = True
    expected[1, 8:12, 1] = False
    assert torch.equal(seen, expected)


def test_depth_tolerance_decides_agreement():
    origins, directions, depths, c2ws, intrinsics = _scene()
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, 10, 12] = True
    depths = depths.clone()
    depths[0, 10, 12] *= 1.08  # camera 0's depth 8 % off: its point lies 8 % behind the wall seen by camera 1
    points = _points(origins, directions, depths, masks)
    assert not seen_in_other_views(points, depths, masks, c2ws, intrinsics, tolerance=0.05)[0, 10, 12]
    assert seen_in_other_views(points, depths, masks, c2ws, intrinsics, tolerance=0.1)[0, 10, 12]
    with pytest.raises(ValueError, match="tolerance"):
        seen_in_other_views(points, depths, masks, c2ws, intrinsics, tolerance=-1)
    with pytest.raises(ValueError, match="points for 1 masked pixels"):
        seen_in_other_views([points[0][:0], points[1]], depths, masks, c2ws, intrinsics)
