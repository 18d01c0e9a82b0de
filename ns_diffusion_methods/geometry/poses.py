"""Rotations, unit quaternions and camera poses: the package's one home for this maths.

Conventions:

- quaternions are ``[..., 4]`` in (w, x, y, z) order (gsplat's and nerfstudio's);
- rotations are ``[..., 3, 3]`` matrices; poses are camera-to-world matrices ``[..., 3, 4]`` (or ``[..., 4, 4]``), in
  any camera convention as long as all poses compared share it;
- the pose distance is ``translation_weight * |t_a - t_b| + rotation_weight * angle(R_a, R_b)``, angle in radians
  (the distance of the official Difix3D ``CameraPoseInterpolator``; here the angle is computed from the relative
  quaternion, which never gives NaN and is accurate for tiny angles, where the official arccos is not).

Users: the splat rasterizer (Gaussian covariances from quaternions), Difix3D's progressive pseudo cameras (nearest
training camera, SLERP steps toward a target) and the fixer's training-pair curation (nearest reference camera).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def quaternion_to_rotation(quaternions: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` (w, x, y, z), normalised first."""
    w, x, y, z = torch.unbind(quaternions / quaternions.norm(dim=-1, keepdim=True), dim=-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quaternions.shape[:-1] + (3, 3))


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """Unit quaternions ``[..., 4]`` (w, x, y, z) with ``w >= 0`` of rotation matrices ``[..., 3, 3]``."""
    m = rotation
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # four candidate (un-normalised) quaternions, 4 * (w, x, y, z) * one of their components; the one with the largest
    # norm is the numerically best (Shepperd's method)
    candidates = torch.stack([
        torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]],
                    dim=-1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], dim=-1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], dim=-1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], dim=-1),
    ], dim=-2)  # [..., 4, 4]
    best = candidates.norm(dim=-1).argmax(dim=-1, keepdim=True)  # [..., 1]
    quaternions = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    quaternions = quaternions / quaternions.norm(dim=-1, keepdim=True)
    return torch.where(quaternions[..., :1] < 0, -quaternions, quaternions)


def rotation_angle(rotation_a: Tensor, rotation_b: Tensor) -> Tensor:
    """Angle in radians, in [0, pi], of the rotation taking ``rotation_a`` to ``rotation_b`` (``[..., 3, 3]``)."""
    relative = rotation_to_quaternion(rotation_a.transpose(-1, -2) @ rotation_b)
    # 2 atan2(|v|, |w|) is accurate for tiny angles too, unlike arccos((trace - 1) / 2)
    return 2.0 * torch.atan2(relative[..., 1:].norm(dim=-1), relative[..., 0].abs())


def pose_distance(pose_a: Tensor, pose_b: Tensor, translation_weight: float = 1.0,
                  rotation_weight: float = 1.0) -> Tensor:
    """``translation_weight * |t_a - t_b| + rotation_weight * angle(R_a, R_b)`` of c2w poses ``[..., 3|4, 4]``.

    The inputs broadcast: ``pose_distance(queries[:, None], candidates[None])`` gives all pairs ``[M, N]``.
    """
    translation = (pose_a[..., :3, 3] - pose_b[..., :3, 3]).norm(dim=-1)
    return translation_weight * translation + rotation_weight * rotation_angle(pose_a[..., :3, :3],
                                                                                 pose_b[..., :3, :3])


def nearest_pose_indices(queries: Tensor, candidates: Tensor, translation_weight: float = 1.0,
                         rotation_weight: float = 1.0) -> Tensor:
    """For each of ``queries [M, 3|4, 4]``, the index of the nearest of ``candidates [N, 3|4, 4]``: ``[M]`` long."""
    if candidates.shape[0] == 0:
        raise ValueError("nearest_pose_indices needs at least one candidate pose.")
    distances = pose_distance(queries[:, None], candidates[None], translation_weight, rotation_weight)  # [M, N]
    return distances.argmin(dim=1)


def slerp(quaternion_a: Tensor, quaternion_b: Tensor, fraction: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions ``[..., 4]`` by ``fraction [...]`` in [0, 1] (shortest arc)."""
    dot = (quaternion_a * quaternion_b).sum(dim=-1, keepdim=True)
    quaternion_b = torch.where(dot < 0, -quaternion_b, quaternion_b)  # q and -q are the same rotation
    dot = dot.abs().clamp(max=1.0)
    fraction = fraction[..., None]
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6  # nearly identical: linear interpolation is exact enough
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    weight_a = torch.where(near, 1 - fraction, torch.sin((1 - fraction) * theta) / safe)
    weight_b = torch.where(near, fraction, torch.sin(fraction * theta) / safe)
    quaternions = weight_a * quaternion_a + weight_b * quaternion_b
    return quaternions / quaternions.norm(dim=-1, keepdim=True)


def step_pose_toward(current: Tensor, target: Tensor, step_size: float, translation_weight: float = 1.0,
                     rotation_weight: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Move c2w poses ``current [M, 3, 4]`` toward ``target [M, 3, 4]`` by ``step_size`` of the pose distance.

    The translation is interpolated linearly and the rotation by SLERP, both by the fraction
    ``step_size / distance``, so the combined :func:`pose_distance` to the target drops by exactly ``step_size``.
    A pose within ``step_size`` of its target lands on it.

    Returns:
        The new poses ``[M, 3, 4]`` and ``arrived [M]`` (bool: the new pose is the target).
    """
    if step_size <= 0:
        raise ValueError(f"`step_size` must be > 0, but is {step_size}.")
    current, target = current[..., :3, :4], target[..., :3, :4]
    distance = pose_distance(current, target, translation_weight, rotation_weight)
    arrived = distance <= step_size
    fraction = torch.where(arrived, torch.ones_like(distance), step_size / distance.clamp_min(1e-12))
    translation = current[..., :3, 3] + fraction[..., None] * (target[..., :3, 3] - current[..., :3, 3])
    rotation = slerp(rotation_to_quaternion(current[..., :3, :3]), rotation_to_quaternion(target[..., :3, :3]),
                     fraction)
    moved = torch.cat([quaternion_to_rotation(rotation), translation[..., None]], dim=-1)
    return torch.where(arrived[:, None, None], target, moved), arrived
