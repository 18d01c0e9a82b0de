"""Which masked pixels of a view show a surface that another view sees unmasked: pinhole projection and a depth test.

Object removal hides the background behind the object in every training view, but much of it is often in plain
sight in *other* views (a camera that looks past the object's side). Those pixels need no inpainting: the scene
reconstruction already learns them from the views that see them. :func:`seen_in_other_views` finds them from each
view's depth map (rendered by the run being trained):

1. a masked pixel of view ``i`` is lifted to its surface point ``X = o + depth * d`` (``d`` the unit ray direction
   through the pixel centre, nerfstudio's convention; ``depth`` the distance along it);
2. ``X`` is projected into every other view ``j`` (:func:`project_points`, OpenGL camera frame as nerfstudio's
   cameras: x right, y up, z back; pixel centres at +0.5);
3. ``X`` is **seen** by ``j`` when it lands inside the image, in front of the camera, on a pixel that ``j``'s mask
   leaves unmasked, and ``j``'s own depth there agrees with the distance from ``j``'s centre to ``X`` within a
   relative ``tolerance`` (otherwise something stands in front of ``X`` in ``j``, or ``X`` is not on ``j``'s surface).

A pixel is seen in other views when at least one view sees its point. Lens distortion is ignored (pinhole
projection): with a distorted camera the test is approximate near the image borders.

Bottom-level: torch only.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor


def project_points(points: Tensor, camera_to_world: Tensor, fx: float, fy: float, cx: float, cy: float, width: int,
                   height: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Project world points ``[M, 3]`` into a pinhole camera (OpenGL frame, nerfstudio's convention).

    Args:
        points: ``[M, 3]`` world points.
        camera_to_world: ``[3, 4]`` (or ``[4, 4]``) camera-to-world matrix; the camera looks along its -z axis.
        fx, fy, cx, cy: intrinsics in pixels (the pixel ``(row, col)`` has its centre at ``(row + 0.5, col + 0.5)``).
        width, height: image size in pixels.

    Returns:
        ``row``, ``col`` (long ``[M]``; meaningful where ``inside``), ``distance`` (``[M]``, Euclidean distance from
        the camera centre, the depth convention of nerfstudio's renders) and ``inside`` (bool ``[M]``: in front of
        the camera and within the image).
    """
    matrix = camera_to_world[:3].to(points.dtype)
    centre = matrix[:, 3]
    offset = points - centre
    local = offset @ matrix[:, :3]  # rotation transpose: world -> camera frame
    forward = -local[:, 2]
    in_front = forward > 1e-9
    safe = torch.where(in_front, forward, torch.ones_like(forward))
    u = cx + fx * local[:, 0] / safe
    v = cy - fy * local[:, 1] / safe
    col, row = torch.floor(u).long(), torch.floor(v).long()
    inside = in_front & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    return row, col, offset.norm(dim=-1), inside


def seen_in_other_views(hole_points: Sequence[Tensor], depths: Tensor, masks: Tensor, camera_to_worlds: Tensor,
                        intrinsics: Tensor, tolerance: float = 0.05) -> Tensor:
    """Per view, the masked pixels whose surface point another view sees unmasked (see the module docstring).

    Args:
        hole_points: per view, ``[M_i, 3]`` surface points of its masked pixels in row-major order
            (:func:`surface_points_of`: ``origin + depth * direction``).
        depths: ``[N, H, W]`` distance along each unit ray to the surface (e.g. a NeRF's median depth).
        masks: ``[N, H, W]`` bool, True = masked (the object region: not a view of the background).
        camera_to_worlds: ``[N, 3, 4]`` camera-to-world matrices of the same views.
        intrinsics: ``[N, 4]`` (fx, fy, cx, cy) in pixels.
        tolerance: relative depth agreement needed in the other view (0.05: within 5 % of the distance).

    Returns:
        ``[N, H, W]`` bool: True where the pixel is masked and its point is seen unmasked by some other view.
    """
    if tolerance < 0:
        raise ValueError(f"`tolerance` must be >= 0, but got {tolerance}.")
    num_views, height, width = masks.shape
    seen = torch.zeros_like(masks, dtype=torch.bool)
    for i in range(num_views):
        hole = masks[i]
        points = hole_points[i]
        if points.shape[0] != int(hole.sum()):
            raise ValueError(f"view {i}: {points.shape[0]} points for {int(hole.sum())} masked pixels.")
        if points.shape[0] == 0:
            continue
        found = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
        for j in range(num_views):
            if j == i:
                continue
            todo = ~found
            if not bool(todo.any()):
                break
            fx, fy, cx, cy = (float(v) for v in intrinsics[j])
            row, col, distance, inside = project_points(points[todo], camera_to_worlds[j], fx, fy, cx, cy, width,
                                                        height)
            hit = torch.zeros_like(inside)
            r, c = row[inside], col[inside]
            agree = (depths[j][r, c] - distance[inside]).abs() <= tolerance * distance[inside]
            hit[inside] = ~masks[j][r, c] & agree
            found[todo.nonzero().squeeze(1)[hit]] = True
        seen[i][hole] = found
    return seen


def surface_points_of(origins: Tensor, directions: Tensor, depth: Tensor, mask: Tensor) -> Tensor:
    """``[M, 3]`` surface points ``origin + depth * direction`` of the pixels of one view where ``mask`` (``[H, W]``)
    is True, in row-major order (``origins``, ``directions``: ``[H, W, 3]``, unit directions; ``depth``: ``[H, W]``)."""
    return origins[mask] + depth[mask][:, None] * directions[mask]
