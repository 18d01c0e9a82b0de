"""Geometry shared by the package: rotations, quaternions and camera poses (:mod:`.poses`); pinhole projection and
cross-view visibility of masked pixels (:mod:`.visibility`).

Bottom-level: imports torch only, never a method, a dataset update or a renderer.
"""

from ns_diffusion_methods.geometry.poses import (
    nearest_pose_indices,
    pose_distance,
    quaternion_to_rotation,
    rotation_angle,
    rotation_to_quaternion,
    slerp,
    step_pose_toward,
)
from ns_diffusion_methods.geometry.visibility import project_points, seen_in_other_views, surface_points_of

__all__ = ["nearest_pose_indices", "pose_distance", "project_points", "quaternion_to_rotation", "rotation_angle",
           "rotation_to_quaternion", "seen_in_other_views", "slerp", "step_pose_toward", "surface_points_of"]
