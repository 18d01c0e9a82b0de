"""Camera geometry for RenderDiffusion: batched pinhole rays, Plücker coordinates, triplane frames, turntables.

Cameras follow nerfstudio: OpenGL camera-to-world ``[B, 3, 4]`` (the camera looks down -z, +y up) and pinhole
intrinsics ``[B, 4] = (fx, fy, cx, cy)`` in pixels with pixel centres at half-integers, so :func:`pixel_rays`
matches ``Cameras.generate_rays`` exactly (a test checks it). Batched tensors instead of ``Cameras`` objects keep
the per-step cost low: every training step renders B different cameras.
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Tuple

import torch
from torch import Tensor


def pixel_rays(camera_to_worlds: Tensor, intrinsics: Tensor, height: int, width: int,
               pixel_indices: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Rays through pixel centres, as nerfstudio generates them.

    Args:
        camera_to_worlds: ``[B, 3, 4]`` OpenGL camera-to-world matrices.
        intrinsics: ``[B, 4]`` fx, fy, cx, cy.
        height: image height H.
        width: image width W.
        pixel_indices: optional ``[B, R]`` flat pixel indices (row * W + col); all H*W pixels when None.

    Returns:
        origins and unit directions, each ``[B, R, 3]`` (R = H*W when ``pixel_indices`` is None).
    """
    B = camera_to_worlds.shape[0]
    assert camera_to_worlds.shape == (B, 3, 4) and intrinsics.shape == (B, 4), (camera_to_worlds.shape,
                                                                               intrinsics.shape)
    device, dtype = camera_to_worlds.device, camera_to_worlds.dtype
    if pixel_indices is None:
        pixel_indices = torch.arange(height * width, device=device).expand(B, -1)
    rows = torch.div(pixel_indices, width, rounding_mode="floor").to(dtype) + 0.5  # [B, R]
    cols = (pixel_indices % width).to(dtype) + 0.5
    fx, fy, cx, cy = (intrinsics[:, i: i + 1] for i in range(4))  # [B, 1] each
    # camera frame (OpenGL): x right, y up, looking down -z
    local = torch.stack([(cols - cx) / fx, -(rows - cy) / fy, -torch.ones_like(cols)], dim=-1)  # [B, R, 3]
    directions = torch.einsum("bij,brj->bri", camera_to_worlds[:, :, :3], local)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = camera_to_worlds[:, None, :, 3].expand_as(directions)
    return origins, directions


def plucker_coordinates(origins: Tensor, directions: Tensor) -> Tensor:
    """Plücker coordinates ``(d, o × d)`` of rays; the moment is the same for every point o on the line.

    Args:
        origins: ``[..., 3]`` any point on each ray.
        directions: ``[..., 3]`` unit directions.

    Returns:
        ``[..., 6]``.
    """
    return torch.cat([directions, torch.linalg.cross(origins, directions, dim=-1)], dim=-1)


def frame_rotations(camera_to_worlds: Tensor, mode: Literal["world", "yaw", "view"]) -> Tensor:
    """World -> triplane-frame rotations ``[B, 3, 3]``.

    - ``world``: the identity (the triplane lives in the dataset's aligned world frame).
    - ``yaw``: the world frame turned about its up axis (+z) so that the input camera sits at azimuth 0 (on the +x
      side); gravity stays aligned, so the floor is horizontal in every triplane, and the input camera's pose in
      the frame depends only on its elevation and distance.
    - ``view``: the frame's axes are the input camera's axes (right, up, backward), its origin the scene centre, so
      every input camera has the same pose in its own frame.
    """
    B = camera_to_worlds.shape[0]
    if mode == "world":
        return torch.eye(3, dtype=camera_to_worlds.dtype, device=camera_to_worlds.device).expand(B, 3, 3)
    if mode == "yaw":
        position = camera_to_worlds[:, :, 3]
        azimuth = torch.atan2(position[:, 1], position[:, 0])  # 0 for a camera straight above the origin
        cos, sin = torch.cos(azimuth), torch.sin(azimuth)
        zeros, ones = torch.zeros_like(cos), torch.ones_like(cos)
        return torch.stack([torch.stack([cos, sin, zeros], -1), torch.stack([-sin, cos, zeros], -1),
                            torch.stack([zeros, zeros, ones], -1)], dim=-2)  # R_z(-azimuth)
    if mode == "view":
        return camera_to_worlds[:, :, :3].transpose(1, 2)
    raise ValueError(f"`triplane_frame` must be 'world', 'yaw' or 'view', but is {mode!r}.")


def image_aligned_planes(planes: Tensor, mode: Literal["world", "yaw", "view"]) -> Tensor:
    """Lay the encoder's image-shaped feature maps onto the planes so that image axes match frame axes.

    The U-Net's output ``[B, 3, C, N, N]`` is indexed like the image (row down, column right). In the ``yaw`` and
    ``view`` frames the input camera has a known orientation, so each plane can be oriented such that a feature
    computed at an image location lands where that location's 3D points project: e.g. in the ``yaw`` frame image
    columns run along +y and image rows along -z, so the y-z plane (the frontal plane) is the feature map flipped
    upside down. A convolutional encoder then needs no global re-arrangement. In the ``world`` frame no such
    orientation exists and the planes are returned unchanged.

    Args:
        planes: ``[B, 3, C, N, N]`` (xy, xz, yz; plane rows index the second axis, columns the first).
        mode: the triplane frame.
    """
    if mode == "world":
        return planes
    xy, xz, yz = planes.unbind(dim=1)
    if mode == "yaw":
        # camera on +x looking towards -x: columns -> +y, rows -> -z, rows (down the image) -> nearer, i.e. +x
        xy = xy.transpose(-1, -2)  # v = y <- columns, u = x <- rows
        xz = xz.flip(-2)  # v = z <- rows flipped
        yz = yz.flip(-2)  # v = z <- rows flipped, u = y <- columns
    elif mode == "view":
        # columns -> +x, rows -> -y
        xy = xy.flip(-2)  # v = y <- rows flipped, u = x <- columns
        yz = yz.flip(-2).transpose(-1, -2)  # u = y <- rows flipped
    else:
        raise ValueError(f"`triplane_frame` must be 'world', 'yaw' or 'view', but is {mode!r}.")
    return torch.stack([xy, xz, yz], dim=1)


def to_frame(camera_to_worlds: Tensor, rotations: Tensor) -> Tensor:
    """Express cameras ``[B, 3, 4]`` in frames given by world->frame rotations ``[B, 3, 3]``."""
    return torch.cat([rotations @ camera_to_worlds[:, :, :3], rotations @ camera_to_worlds[:, :, 3:]], dim=-1)


def look_at(positions: Tensor, target: Optional[Tensor] = None, up: Tuple[float, float, float] = (0.0, 0.0, 1.0)
            ) -> Tensor:
    """OpenGL camera-to-world matrices ``[V, 3, 4]`` for cameras at ``positions [V, 3]`` looking at ``target``."""
    target = torch.zeros(3, dtype=positions.dtype, device=positions.device) if target is None else target
    backward = positions - target
    backward = backward / backward.norm(dim=-1, keepdim=True)
    up_vec = torch.tensor(up, dtype=positions.dtype, device=positions.device).expand_as(backward)
    right = torch.linalg.cross(up_vec, backward, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    true_up = torch.linalg.cross(backward, right, dim=-1)
    return torch.stack([right, true_up, backward, positions], dim=-1)


def turntable(camera_to_world: Tensor, num_views: int) -> Tensor:
    """``num_views`` cameras ``[V, 3, 4]`` on the circle of ``camera_to_world [3, 4]`` around the world z axis.

    The input camera is the first view; the others rotate it about +z (the datasets' up axis) in equal steps, so
    they keep its distance, elevation and look-at point (the origin).
    """
    angles = torch.arange(num_views, dtype=camera_to_world.dtype, device=camera_to_world.device) * (
        2 * math.pi / num_views)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zeros, ones = torch.zeros_like(angles), torch.ones_like(angles)
    rot = torch.stack([torch.stack([cos, -sin, zeros], -1), torch.stack([sin, cos, zeros], -1),
                       torch.stack([zeros, zeros, ones], -1)], dim=-2)  # [V, 3, 3] about +z
    return rot @ camera_to_world


def project_points(points: Tensor, camera_to_world: Tensor, intrinsics: Tensor) -> Tuple[Tensor, Tensor]:
    """Pixel coordinates ``(col, row)`` and depths of world points ``[P, 3]`` in one camera (inverse of
    :func:`pixel_rays`; used by tests and the README's geometry checks)."""
    rotation, translation = camera_to_world[:, :3], camera_to_world[:, 3]
    local = (points - translation) @ rotation  # world -> camera: R^T (p - t)
    depth = -local[:, 2]
    fx, fy, cx, cy = intrinsics.unbind(-1)
    cols = fx * local[:, 0] / depth + cx
    rows = -fy * local[:, 1] / depth + cy
    return torch.stack([cols, rows], dim=-1), depth
