"""Difix3D's progressive schedule: when the pseudo cameras move, and how far (a gsplat-``Strategy``-like dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ns_diffusion_methods.dataset_updates.pseudo_views.state import PseudoViews
from ns_diffusion_methods.geometry.poses import nearest_pose_indices, step_pose_toward


@dataclass
class ProgressiveSchedule:
    """Difix3D's progressive 3D update schedule: when pseudo cameras move, and how far.

    Like a gsplat ``Strategy``, this dataclass holds only hyperparameters; the state lives in a :class:`PseudoViews`
    built by :meth:`initialize_state` and passed back to :meth:`advance`.

    - Every ``steps_per_fix`` steps from ``start_step`` (:meth:`is_due`), each pseudo camera moves ``step_size``
      (combined pose distance) toward its target, or lands on it (:meth:`advance`).
    - Each pseudo camera starts at the training camera nearest its target; its reference is the training camera
      nearest its current pose.

    Args:
        steps_per_fix: steps between rounds (paper: 1500; official code: 2000).
        start_step: first step at which a round may happen; rounds happen at steps ``s >= start_step`` with
            ``(s - start_step) % steps_per_fix == 0``.
        step_size: distance covered per round, in normalised scene units (+ radians), official 0.5.
        translation_weight: weight of the translation in the pose distance (official 1).
        rotation_weight: weight of the rotation angle in radians in the pose distance (official 1).

    Example::

        schedule = ProgressiveSchedule(steps_per_fix=1500)
        state = schedule.initialize_state(train_poses, train_intrinsics, train_sizes, target_poses)
        for step in range(start, end):
            train_one_step(step)
            if schedule.is_due(step):
                schedule.advance(state, train_poses, step)
                ...  # render state.cameras(), fix, store (run_fix_round does all of this)
    """

    steps_per_fix: int = 1500
    start_step: int = 0
    step_size: float = 0.5
    translation_weight: float = 1.0
    rotation_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.steps_per_fix < 1:
            raise ValueError(f"`steps_per_fix` must be >= 1, but is {self.steps_per_fix}.")
        if self.step_size <= 0:
            raise ValueError(f"`step_size` must be > 0, but is {self.step_size}.")
        if self.start_step < 0:
            raise ValueError(f"`start_step` must be >= 0, but is {self.start_step}.")

    def is_due(self, step: int) -> bool:
        """Whether a round happens at ``step``."""
        return step >= self.start_step and (step - self.start_step) % self.steps_per_fix == 0

    def initialize_state(self, training_poses: Tensor, training_intrinsics: Tensor, training_sizes: Tensor,
                         target_poses: Tensor) -> PseudoViews:
        """One pseudo camera per target, placed at the training camera nearest that target.

        Args:
            training_poses: [N, 3|4, 4] c2w of the training cameras (normalised space).
            training_intrinsics: [N, 4] (fx, fy, cx, cy).
            training_sizes: [N, 2] (height, width).
            target_poses: [M, 3|4, 4] c2w of the targets.
        """
        training_poses, target_poses = training_poses[:, :3, :4].float(), target_poses[:, :3, :4].float()
        start = nearest_pose_indices(target_poses, training_poses, self.translation_weight, self.rotation_weight)
        return PseudoViews(training_poses[start], target_poses, training_intrinsics[start], training_sizes[start])

    def advance(self, state: PseudoViews, training_poses: Tensor, step: int) -> Tensor:
        """Move every pseudo camera one step toward its target; refresh its reference index; count the round.

        Returns:
            ``[M]`` the distances to the targets after the move.
        """
        poses, arrived = step_pose_toward(state.poses, state.targets, self.step_size, self.translation_weight,
                                          self.rotation_weight)
        state.poses.copy_(poses)
        state.arrived.copy_(arrived | state.arrived)
        state.reference_indices.copy_(nearest_pose_indices(poses, training_poses[:, :3, :4].to(poses),
                                                           self.translation_weight, self.rotation_weight))
        state.rounds += 1
        state.last_round_step.fill_(step)
        return state.distances_to_targets(self.translation_weight, self.rotation_weight)
