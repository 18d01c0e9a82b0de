"""The pseudo views of a run as a module of registered buffers, so checkpoints carry them and ``--load-dir`` resumes
with them."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor, nn

from ns_diffusion_methods.dataset_updates.store import ImageStore
from ns_diffusion_methods.geometry.poses import pose_distance


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
