"""Progressive pseudo views: novel cameras that walk from the training cameras toward target views (Difix3D).

Difix3D (Wu et al., CVPR 2025, https://arxiv.org/abs/2503.01774) improves a reconstruction in the views a user cares
about by training on *pseudo views*: renders of novel cameras, repaired by a 2D fixer. Fixing a render far from every
training view fails, so the cameras move there progressively: every ``steps_per_fix`` steps each pseudo camera takes
one step from its current pose toward its target, is rendered, fixed with the nearest training image as reference,
and replaces its previous pseudo view. Each round the reconstruction is a little better a little further out.

This module is that machinery, independent of the model kind (NeRF or splats) and of the fixer:

- pose geometry: :func:`pose_distance` (translation + rotation angle, the official ``CameraPoseInterpolator``
  distance), :func:`nearest_pose_indices`, :func:`step_pose_toward` (linear translation + quaternion SLERP);
- targets: the evaluation cameras, or a camera path written by the nerfstudio viewer (:func:`load_camera_path`);
- :class:`PseudoViews`, a module of registered buffers (poses, targets, intrinsics, reference indices, the fixed
  images and the render accumulations), so checkpoints carry the pseudo views and ``--load-dir`` resumes with them;
- :class:`ProgressiveSchedule`, the hyperparameters as a gsplat-``Strategy``-like dataclass with no hidden state:
  ``initialize_state(...)`` builds the :class:`PseudoViews`, ``is_due(step)`` and ``advance(state, ...)`` move the
  cameras; a pipeline ``TrainingCallback`` drives it (see :func:`run_fix_round`);
- :func:`run_fix_round`: render (eval mode, no gradients, OOM-tolerant), fix in batches through the fixer's batch API
  with a progress bar, split across the ranks of a multi-GPU run, and store.

Units: poses are in the dataparser's normalised space (nerfstudio scales captures into about [-1, 1]). The step is
measured in the combined distance ``translation_weight * |dt| + rotation_weight * angle`` (angle in radians, weights
1 as in the official code), and each round covers exactly ``step_size`` of it: for a pure translation that is the
official "0.5 units toward the target", and a pseudo camera's distance to its target strictly decreases by
``step_size`` every round until it arrives.

Deviations from the official code: each pseudo camera keeps its own target (the official ``shift_poses`` re-picks the
nearest current pose for every target each round, so walks can hop between chains); the rotation is SLERPed by the same
fraction as the translation instead of snapping to the target rotation when the translation is tiny; pose-distance
angles are clipped (the official arccos is not, and can give NaN).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ns_diffusion_methods.dataset_updates.distributed import DistributedContext, run_sharded
from ns_diffusion_methods.dataset_updates.render import render_camera_outputs
from ns_diffusion_methods.dataset_updates.store import ImageStore
from ns_diffusion_methods.errors import DataError

# --------------------------------------------------------------------------------------------------------------------
# pose geometry (c2w matrices [..., 3, 4] or [..., 4, 4], any convention as long as it is the same for all poses)


def rotation_to_quaternion(rotation: Tensor) -> Tensor:
    """Unit quaternions ``[..., 4]`` (w, x, y, z), ``w >= 0``, of rotation matrices ``[..., 3, 3]``."""
    m = rotation
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # four candidate (un-normalised) quaternions; the one with the largest norm is numerically best
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
    quat = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_rotation(quat: Tensor) -> Tensor:
    """Rotation matrices ``[..., 3, 3]`` of quaternions ``[..., 4]`` (w, x, y, z), normalised first."""
    w, x, y, z = torch.unbind(quat / quat.norm(dim=-1, keepdim=True), dim=-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quat.shape[:-1] + (3, 3))


def rotation_angle(rotation_a: Tensor, rotation_b: Tensor) -> Tensor:
    """Angle in radians, in [0, pi], of the rotation taking ``rotation_a`` to ``rotation_b`` (``[..., 3, 3]``)."""
    relative = rotation_to_quaternion(rotation_a.transpose(-1, -2) @ rotation_b)
    # 2 atan2(|v|, |w|) is accurate for tiny angles too, unlike arccos(2 <q1, q2>^2 - 1)
    return 2.0 * torch.atan2(relative[..., 1:].norm(dim=-1), relative[..., 0].abs())


def pose_distance(pose_a: Tensor, pose_b: Tensor, translation_weight: float = 1.0,
                  rotation_weight: float = 1.0) -> Tensor:
    """``translation_weight * |t_a - t_b| + rotation_weight * angle(R_a, R_b)`` for c2w poses ``[..., 3|4, 4]``."""
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


def slerp(quat_a: Tensor, quat_b: Tensor, fraction: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions ``[..., 4]`` by ``fraction [...]`` in [0, 1] (shortest arc)."""
    dot = (quat_a * quat_b).sum(dim=-1, keepdim=True)
    quat_b = torch.where(dot < 0, -quat_b, quat_b)
    dot = dot.abs().clamp(max=1.0)
    fraction = fraction[..., None]
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6  # nearly identical: linear interpolation is exact enough
    safe = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    weight_a = torch.where(near, 1 - fraction, torch.sin((1 - fraction) * theta) / safe)
    weight_b = torch.where(near, fraction, torch.sin(fraction * theta) / safe)
    quat = weight_a * quat_a + weight_b * quat_b
    return quat / quat.norm(dim=-1, keepdim=True)


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
    quat = slerp(rotation_to_quaternion(current[..., :3, :3]), rotation_to_quaternion(target[..., :3, :3]), fraction)
    moved = torch.cat([quaternion_to_rotation(quat), translation[..., None]], dim=-1)
    return torch.where(arrived[:, None, None], target, moved), arrived


# --------------------------------------------------------------------------------------------------------------------
# targets


def load_camera_path(path: Path, max_targets: Optional[int] = None):
    """The cameras of a camera path JSON written by the nerfstudio viewer (``ns-render camera-path`` format).

    Poses are in the trained model's (dataparser-normalised) space, as the viewer writes them.

    Args:
        path: the JSON file (``camera_paths/*.json`` of a capture, exported from the viewer's render panel).
        max_targets: keep at most this many cameras, evenly spaced along the path. Default is None (all).
    """
    from nerfstudio.cameras.camera_paths import get_path_from_json

    path = Path(path)
    if not path.is_file():
        raise DataError(f"The target camera path {path} does not exist. Export one from the viewer's render panel "
                        f"(it writes camera_paths/<name>.json into the capture folder) and pass that file to "
                        f"--pipeline.target-cameras.")
    try:
        data = json.loads(path.read_text())
        cameras = get_path_from_json(data)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{path} is not a nerfstudio camera path ({type(err).__name__}: {err}). It needs "
                        f"`render_height`, `render_width` and a `camera_path` list of {{camera_to_world, fov}} "
                        f"entries, as the viewer's render panel writes it.") from None
    if cameras.shape[0] == 0:
        raise DataError(f"The camera path {path} has no cameras.")
    return subsample_cameras(cameras, max_targets)


def subsample_cameras(cameras, max_count: Optional[int]):
    """At most ``max_count`` cameras, evenly spaced (first and last kept); all of them when ``max_count`` is None."""
    count = cameras.shape[0]
    if max_count is None or count <= max_count:
        return cameras
    if max_count < 1:
        raise ValueError(f"`max_targets` must be >= 1, but is {max_count}.")
    indices = torch.linspace(0, count - 1, max_count).round().long()
    return cameras[indices]


# --------------------------------------------------------------------------------------------------------------------
# state


class PseudoViews(nn.Module):
    """The pseudo views of a run: one per target, every quantity a registered buffer (saved in checkpoints).

    Buffers (M = number of pseudo cameras):

    - ``poses`` [M, 3, 4]: current c2w poses; ``targets`` [M, 3, 4]: where each camera is going;
    - ``intrinsics`` [M, 4] (fx, fy, cx, cy) and ``image_sizes`` [M, 2] (height, width): the pseudo cameras use the
      intrinsics of the training camera they start from, so renders and references have the training size;
    - ``reference_indices`` [M]: nearest training camera of the current pose (-1 before the first round);
    - ``arrived`` [M] bool; ``rounds`` (number of rounds so far) and ``last_round_step`` (-1 before any);
    - ``images`` (:class:`ImageStore`, RGB): the fixed images; ``accumulations`` (:class:`ImageStore`, 1 channel):
      the render's accumulation / alpha at fix time (pixels where it is low are not supervised).

    Loading a checkpoint resizes the buffers to the checkpoint's (a run evaluated with a different target list, or a
    fresh module, still loads).
    """

    poses: Tensor
    targets: Tensor
    intrinsics: Tensor
    image_sizes: Tensor
    reference_indices: Tensor
    arrived: Tensor
    rounds: Tensor
    last_round_step: Tensor

    def __init__(self, poses: Tensor, targets: Tensor, intrinsics: Tensor, image_sizes: Tensor) -> None:
        super().__init__()
        count = poses.shape[0]
        assert poses.shape == (count, 3, 4) and targets.shape == (count, 3, 4), (poses.shape, targets.shape)
        assert intrinsics.shape == (count, 4) and image_sizes.shape == (count, 2), (intrinsics.shape, image_sizes.shape)
        self.register_buffer("poses", poses.float().clone())
        self.register_buffer("targets", targets.float().clone())
        self.register_buffer("intrinsics", intrinsics.float().clone())
        self.register_buffer("image_sizes", image_sizes.long().clone())
        self.register_buffer("reference_indices", torch.full((count,), -1, dtype=torch.long))
        self.register_buffer("arrived", torch.zeros(count, dtype=torch.bool))
        self.register_buffer("rounds", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_round_step", torch.full((), -1, dtype=torch.long))
        height = int(image_sizes[:, 0].max()) if count else 1
        width = int(image_sizes[:, 1].max()) if count else 1
        self.images = ImageStore(count, height, width, 3)
        self.accumulations = ImageStore(count, height, width, 1)

    @classmethod
    def empty(cls) -> "PseudoViews":
        """No pseudo views (evaluation and rendering runs; loading a checkpoint fills them)."""
        return cls(torch.zeros(0, 3, 4), torch.zeros(0, 3, 4), torch.zeros(0, 4), torch.zeros(0, 2, dtype=torch.long))

    def __len__(self) -> int:
        return self.poses.shape[0]

    @property
    def filled(self) -> Tensor:
        """``[M]`` bool: which pseudo views have a fixed image."""
        return self.images.filled

    @property
    def has_images(self) -> bool:
        """Whether any pseudo view can be trained on."""
        return bool(self.filled.any()) if len(self) else False

    def distances_to_targets(self, translation_weight: float = 1.0, rotation_weight: float = 1.0) -> Tensor:
        """``[M]``: pose distance of each pseudo camera to its target."""
        return pose_distance(self.poses, self.targets, translation_weight, rotation_weight)

    def cameras(self, indices: Optional[Sequence[int]] = None):
        """The pseudo cameras as nerfstudio ``Cameras`` (perspective, no ``cam_idx`` metadata: they are no
        training image, so per-training-image parameters such as camera optimisers skip them)."""
        from nerfstudio.cameras.cameras import Cameras, CameraType

        index = torch.arange(len(self), device=self.poses.device) if indices is None else \
            torch.as_tensor(list(indices), dtype=torch.long, device=self.poses.device)
        intr = self.intrinsics[index]
        return Cameras(camera_to_worlds=self.poses[index], fx=intr[:, 0:1], fy=intr[:, 1:2], cx=intr[:, 2:3],
                       cy=intr[:, 3:4], width=self.image_sizes[index, 1:2], height=self.image_sizes[index, 0:1],
                       camera_type=CameraType.PERSPECTIVE)

    def image(self, index: int, device: Optional[torch.device] = None) -> Tensor:
        """Fixed image ``index`` as float [H, W, 3] in [0, 1]."""
        return self.images.get(index, device)

    def accumulation(self, index: int, device: Optional[torch.device] = None) -> Tensor:
        """The render's accumulation of pseudo view ``index`` at fix time, [H, W, 1] in [0, 1]."""
        return self.accumulations.get(index, device)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # adopt the checkpoint's number and size of pseudo views before loading the values
        if prefix + "poses" in state_dict:
            count = state_dict[prefix + "poses"].shape[0]
            images = state_dict.get(prefix + "images.images")
            if count != len(self) or (images is not None and images.shape != self.images.images.shape):
                device = self.poses.device
                for name in ("poses", "targets", "intrinsics", "image_sizes", "reference_indices", "arrived"):
                    setattr(self, name, torch.empty_like(state_dict[prefix + name], device=device))
                height, width = (images.shape[1], images.shape[2]) if images is not None else (1, 1)
                self.images = ImageStore(count, height, width, 3).to(device)
                self.accumulations = ImageStore(count, height, width, 1).to(device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# --------------------------------------------------------------------------------------------------------------------
# schedule


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


# --------------------------------------------------------------------------------------------------------------------
# one round: render, fix, store


@dataclass
class FixRoundResult:
    """What one round produced (on every rank): per pseudo view, the render and the fixed image, [H, W, 3]."""

    renders: Dict[int, Tensor]
    fixed: Dict[int, Tensor]


def _batches(state: PseudoViews, batch_size: int) -> List[List[int]]:
    """Pseudo-view indices grouped by image size, in batches of at most ``batch_size``."""
    by_size: Dict[Tuple[int, int], List[int]] = {}
    for index in range(len(state)):
        by_size.setdefault(tuple(int(v) for v in state.image_sizes[index]), []).append(index)
    return [indices[i:i + batch_size] for indices in by_size.values() for i in range(0, len(indices), batch_size)]


def run_fix_round(
    model: nn.Module,
    state: PseudoViews,
    fixer: Any,
    reference_image: Callable[[int], Tensor],
    step: int,
    batch_size: int = 4,
    fixer_context: Optional[Dict[str, Any]] = None,
    context: Optional[DistributedContext] = None,
    description: Optional[str] = "Fixing pseudo views",
) -> FixRoundResult:
    """Render every pseudo camera at its current pose, fix the renders, and store them in ``state``.

    Rendering uses ``model.get_outputs_for_camera`` in eval mode without gradients (chunked, retried with smaller
    chunks on GPU out-of-memory); the fixer gets batches of up to ``batch_size`` renders of one size, each with its
    nearest training image as reference. With several processes, each rank handles a share of the batches and all
    ranks store all results.

    Args:
        model: the nerfstudio model being trained.
        state: the pseudo views (their poses were just advanced).
        fixer: an object with ``fix(images [B, 3, H, W], references) -> [B, 3, H, W]`` (a
            :class:`~ns_diffusion_methods.fixers.base.Fixer`); a fixer with ``needs_cameras = True`` also gets
            ``cameras=`` (the batch's pseudo cameras) and the entries of ``fixer_context``.
        reference_image: training image ``i`` as [H, W, 3] float in [0, 1].
        step: the training step (recorded with the images).
        batch_size: renders per fixer call.
        fixer_context: extra keyword arguments for camera-aware fixers.
        context: rank and world size (default: the current process group).
        description: progress-bar text (None: no bar).
    """
    batches = _batches(state, batch_size)
    progress = _Progress(description, len(batches))

    def work(batch_index: int) -> Dict[int, Tuple[Tensor, Tensor, Tensor]]:
        indices = batches[batch_index]
        cameras = state.cameras(indices)
        renders, accumulations = [], []
        for position in range(len(indices)):
            outputs = render_camera_outputs(model, cameras[position:position + 1], ("rgb", "accumulation"))
            renders.append(outputs["rgb"][..., :3].clamp(0, 1))
            accumulations.append(outputs.get("accumulation", torch.ones_like(outputs["rgb"][..., :1])))
        images = torch.stack(renders).permute(0, 3, 1, 2)  # [B, 3, H, W]
        references = [reference_image(int(state.reference_indices[i])).to(images)[None].permute(0, 3, 1, 2)
                      for i in indices]
        kwargs: Dict[str, Any] = {}
        if getattr(fixer, "needs_cameras", False):
            kwargs = {"cameras": cameras, **(fixer_context or {})}
        with torch.no_grad():
            fixed = fixer.fix(images, references, **kwargs).permute(0, 2, 3, 1).clamp(0, 1)  # [B, H, W, 3]
        progress.advance()
        return {i: (renders[k].cpu(), fixed[k].cpu(), accumulations[k].clamp(0, 1).cpu())
                for k, i in enumerate(indices)}

    try:
        per_batch = run_sharded(list(range(len(batches))), work, context)
    finally:
        progress.stop()
    result = FixRoundResult(renders={}, fixed={})
    for batch in per_batch.values():
        for index, (render, fixed, accumulation) in batch.items():
            state.images.set(index, fixed, step)
            state.accumulations.set(index, accumulation, step)
            result.renders[index], result.fixed[index] = render, fixed
    return result


class _Progress:
    """A rich progress bar over fixer batches (nothing when ``description`` is None)."""

    def __init__(self, description: Optional[str], total: int) -> None:
        self._bar = None
        if description and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# --------------------------------------------------------------------------------------------------------------------
# logging and the viewer


def log_pseudo_views(result: FixRoundResult, step: int, max_images: int = 8) -> None:
    """Log ``render | fixed`` pairs of a round as images (tensorboard / wandb / comet, whichever is enabled)."""
    from nerfstudio.utils import writer

    for index in sorted(result.fixed)[:max_images]:
        writer.put_image(name=f"PseudoViews/{index:03d}", image=torch.cat([result.renders[index],
                                                                           result.fixed[index]], dim=1), step=step)


def show_in_viewer(viewer_state: Any, state: PseudoViews, frustum_scale: float = 0.1,
                   thumbnail_height: int = 64) -> Dict[str, Any]:
    """Draw the pseudo cameras as frustums (with their fixed image) in the nerfstudio viewer.

    Args:
        viewer_state: the trainer's ``viewer_state`` (a nerfstudio ``Viewer``); None or a legacy viewer: nothing.
        state: the pseudo views.
        frustum_scale: frustum size (the viewer's ``camera_frustum_scale``).
        thumbnail_height: height of the image drawn in each frustum.

    Returns:
        ``{scene-node name: viser frustum handle}``, names ``/pseudo_views/view_NNN`` (drawing again replaces them).
    """
    server = getattr(viewer_state, "viser_server", None)
    if server is None or not len(state):
        return {}
    import numpy as np
    import viser.transforms as vtf
    from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

    handles = {}
    for index in range(len(state)):
        c2w = state.poses[index].detach().cpu().double().numpy()
        height, width = (int(v) for v in state.image_sizes[index])
        fy = float(state.intrinsics[index, 1])
        image = None
        if bool(state.filled[index]):
            thumb = state.image(index).permute(2, 0, 1)[None]
            size = (thumbnail_height, max(1, round(thumbnail_height * width / height)))
            thumb = torch.nn.functional.interpolate(thumb, size=size, mode="bilinear", align_corners=False)
            image = (thumb[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        rotation = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)  # OpenGL -> viser camera
        name = f"/pseudo_views/view_{index:03d}"
        handles[name] = server.scene.add_camera_frustum(
            name=name, fov=float(2 * np.arctan(height / 2 / fy)), aspect=width / height, scale=frustum_scale,
            image=image, wxyz=rotation.wxyz, position=c2w[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO, color=(255, 140, 0))
    return handles


def pseudo_view_stats(state: PseudoViews) -> Dict[str, float]:
    """Scalars for the training log: rounds, mean distance to target, fraction arrived."""
    if not len(state):
        return {}
    distance = state.distances_to_targets()
    return {"pseudo_views/rounds": float(state.rounds), "pseudo_views/mean_distance_to_target": float(distance.mean()),
            "pseudo_views/arrived_fraction": float(state.arrived.float().mean())}


__all__ = [
    "FixRoundResult", "ProgressiveSchedule", "PseudoViews", "load_camera_path", "log_pseudo_views",
    "nearest_pose_indices", "pose_distance", "pseudo_view_stats", "quaternion_to_rotation", "rotation_angle",
    "rotation_to_quaternion", "run_fix_round", "show_in_viewer", "slerp", "step_pose_toward", "subsample_cameras",
]
