"""Geometry shared by the package: rotations, quaternions and camera poses (:mod:`.poses`).

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

__all__ = ["nearest_pose_indices", "pose_distance", "quaternion_to_rotation", "rotation_angle",
           "rotation_to_quaternion", "slerp", "step_pose_toward"]
