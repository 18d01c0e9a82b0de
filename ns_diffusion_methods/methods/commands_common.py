"""What the commands that work on a user's image with a trained multi-object run share (``ns-diffusion reconstruct
renderdiffusion``, ``reconstruct ssdnerf``, ``inpaint renderdiffusion``, ``sample``).

- :func:`load_pipeline`: a run's pipeline, after checking that ``config.yml`` exists and is a run of the method the
  command is for (before the checkpoint and the training images are loaded).
- :func:`read_user_image` / :func:`image_at_size`: the user's image, composited on white like the datasets, resized
  to the model's resolution with a notice.
- :func:`read_pose_file` / :func:`normalised_pose` / :func:`read_pose`: an SRN pose file (OpenCV camera-to-world) as
  the run's dataparser placed its cameras (OpenGL, ``(translation - centre) / radius``).
- :func:`user_cameras`: the cameras of the user's images: intrinsics (and size) of training cameras, poses from pose
  files or from those training cameras.
- :func:`orbit_cameras`: turntable cameras about the datasets' up axis (+z), starting at an input camera.
- :func:`enlarged` / :func:`write_turntable`: turntable files (a strip PNG, an animated GIF, optionally the frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.data.images import read_image, resize_array, save_gif, save_image, to_uint8
from ns_diffusion_methods.errors import DataError, UserFacingError

CONSOLE = Console(stderr=True)

#: the end of the message when a user's image cannot be read
IMAGE_HINT = "Pass PNG or JPEG files (--image, --mask)."


def load_pipeline(config_path: Path, config_type: Type, method: str):
    """The trained pipeline of a run and its checkpoint path, in eval mode (``eval_setup``, training images loaded for
    their cameras).

    Args:
        config_path: the run's ``config.yml``.
        config_type: the pipeline config class the run must have (e.g. ``SSDNeRFPipelineConfig``).
        method: the method's name, for messages (``ssdnerf``).

    Raises:
        UserFacingError: no such file, not a run's config, or a run of another method (checked before loading).
    """
    import yaml
    from nerfstudio.utils.eval_utils import eval_setup

    config_path = Path(config_path)
    if not config_path.is_file():
        raise UserFacingError(f"No run config at {config_path}. Pass the config.yml that ns-train wrote "
                              f"(outputs/<experiment>/{method}*/<timestamp>/config.yml).")
    try:
        config = yaml.load(config_path.read_text(encoding="utf-8"), Loader=yaml.Loader)
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as err:
        raise UserFacingError(f"{config_path} is not a run config that ns-train wrote ({err}). Pass the config.yml "
                              f"of a {method} run.") from None
    pipeline_config = getattr(config, "pipeline", None)
    if pipeline_config is None:
        raise UserFacingError(f"{config_path} is not a run config that ns-train wrote (it has no pipeline). Pass the "
                              f"config.yml of a {method} run (outputs/<experiment>/{method}*/<timestamp>/config.yml).")
    if not isinstance(pipeline_config, config_type):
        name = getattr(config, "method_name", None) or type(pipeline_config).__name__
        raise UserFacingError(f"{config_path} is a run of {name}, not of {method}. Pass the config.yml of a {method} "
                              f"run (outputs/<experiment>/{method}*/<timestamp>/config.yml).")
    _, pipeline, checkpoint, _ = eval_setup(config_path, test_mode="inference")
    return pipeline, checkpoint


def read_user_image(path: Path, mode: Literal["RGB", "L"] = "RGB") -> np.ndarray:
    """A user's image as ``uint8 [H, W, 3]`` (``RGB``; transparent pixels composited on white, as the datasets' images
    are) or ``[H, W]`` (``L``). Raises :class:`DataError` naming the file when it cannot be read."""
    return read_image(path, mode, alpha="white" if mode == "RGB" else "drop", hint=IMAGE_HINT)


def image_at_size(array: np.ndarray, path: Path, size: Union[int, Tuple[int, int]], mode: Literal["RGB", "L"],
                  console: Optional[Console] = None) -> Tensor:
    """``array`` (read from ``path``) as ``[1, C, H, W]`` in [0, 1], resized to ``size`` (``(H, W)`` or a square's
    side; bilinear for ``RGB``, nearest for ``L`` masks) with a notice on ``console`` when its size differs."""
    height, width = (size, size) if isinstance(size, int) else size
    if array.shape[:2] != (height, width):
        (console or CONSOLE).print(f"[yellow]{path} is {array.shape[1]}x{array.shape[0]}; resizing it to the model's "
                                   f"{width}x{height}.[/yellow]")
        array = resize_array(array, (height, width), "bilinear" if mode == "RGB" else "nearest")
    tensor = torch.from_numpy(array.astype(np.float32) / 255.0)
    return tensor.permute(2, 0, 1)[None] if tensor.dim() == 3 else tensor[None, None]


def read_image_at_size(path: Path, size: Union[int, Tuple[int, int]], mode: Literal["RGB", "L"],
                       console: Optional[Console] = None) -> Tensor:
    """:func:`read_user_image`, then :func:`image_at_size`."""
    return image_at_size(read_user_image(path, mode), path, size, mode, console)


def read_pose_file(path: Path) -> np.ndarray:
    """An SRN pose file: 16 numbers, a row-major 4x4 camera-to-world matrix in the OpenCV convention, as ``float64
    [4, 4]``. Raises :class:`DataError` naming the file when it is missing or malformed."""
    from ns_diffusion_methods.data.srn import _read_pose

    path = Path(path)
    if not path.is_file():
        raise DataError(f"The pose file {path} does not exist. Pass an SRN pose file (16 numbers: a row-major 4x4 "
                        f"camera-to-world matrix, OpenCV convention) with --pose.")
    try:
        return _read_pose(path)
    except UnicodeDecodeError as err:
        raise DataError(f"Cannot read the pose file {path} ({err}); it must be a text file of 16 numbers (a row-major "
                        f"4x4 camera-to-world matrix, OpenCV convention).") from None


def normalised_pose(camera_to_world: np.ndarray, radius: float, center: Sequence[float]) -> Tensor:
    """An OpenCV camera-to-world ``[4, 4]`` as the SRN dataparser places cameras: an OpenGL ``float32 [3, 4]`` with the
    translation ``(t - center) / radius`` (computed as the dataparser computes it)."""
    from ns_diffusion_methods.data.srn import opencv_to_opengl

    c2w = torch.from_numpy(opencv_to_opengl(np.asarray(camera_to_world)).astype(np.float32)[:3]).clone()
    c2w[:, 3] = (c2w[:, 3] - torch.tensor(tuple(center), dtype=torch.float32)) * (1.0 / radius)
    return c2w


def read_pose(path: Path, radius: float, center: Sequence[float]) -> Tensor:
    """An SRN pose file (16 floats, OpenCV camera-to-world) as a normalised OpenGL ``[3, 4]`` camera."""
    return normalised_pose(read_pose_file(path), radius, center)


def user_cameras(pipeline, camera_indices: Sequence[int], poses: Sequence[np.ndarray] = ()) -> "Cameras":  # noqa: F821
    """The cameras of a user's images, ``Cameras [n]`` on the CPU.

    Image i has the intrinsics and size of training camera ``camera_indices[i]`` (one index serves every image); its
    pose is ``poses[i]`` (an OpenCV camera-to-world from :func:`read_pose_file`, normalised with the run's dataset
    radius and centre) or, without poses, that training camera's pose.

    Raises:
        UserFacingError: an index outside the training cameras.
    """
    from nerfstudio.cameras.cameras import Cameras

    train_cameras = pipeline.datamanager.train_dataset.cameras
    count = train_cameras.shape[0]
    num = max(len(camera_indices), len(poses))
    indices = list(camera_indices) * num if len(camera_indices) == 1 else list(camera_indices)
    assert len(indices) == num and (not poses or len(poses) == num), (camera_indices, len(poses))
    for index in indices:
        if not 0 <= index < count:
            raise UserFacingError(f"`--camera-index` must be in [0, {count - 1}] (the run's training cameras), but is "
                                  f"{index}.")
    picked = train_cameras[torch.tensor(indices, dtype=torch.long)].to("cpu")
    c2w = picked.camera_to_worlds.reshape(num, 3, 4).float().clone()
    if poses:
        parser = pipeline.datamanager.dataparser  # the radius and centre it normalised the run's cameras with
        radius, center = parser.radius(), tuple(parser.config.center)
        c2w = torch.stack([normalised_pose(pose, radius, center) for pose in poses])
    return Cameras(camera_to_worlds=c2w, fx=picked.fx.reshape(num, 1), fy=picked.fy.reshape(num, 1),
                   cx=picked.cx.reshape(num, 1), cy=picked.cy.reshape(num, 1), width=picked.width.reshape(num, 1),
                   height=picked.height.reshape(num, 1), camera_type=picked.camera_type.reshape(num, 1))


def orbit_cameras(camera: "Cameras", num_views: int) -> "Cameras":  # noqa: F821
    """``num_views`` cameras ``[V]`` on the circle of ``camera`` (``Cameras [1]``) about the datasets' up axis (+z):
    the first is ``camera``, all keep its distance, elevation, look-at point and intrinsics."""
    from nerfstudio.cameras.cameras import Cameras

    from ns_diffusion_methods.methods.renderdiffusion.geometry import turntable

    poses = turntable(camera.camera_to_worlds.reshape(3, 4), num_views)
    expand = lambda values: values.reshape(1, 1).expand(num_views, 1)  # noqa: E731
    return Cameras(camera_to_worlds=poses, fx=expand(camera.fx), fy=expand(camera.fy), cx=expand(camera.cx),
                   cy=expand(camera.cy), width=expand(camera.width), height=expand(camera.height),
                   camera_type=expand(camera.camera_type))


def enlarged(image: Tensor, scale: int) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] as ``uint8 [H * scale, W * scale, 3]`` (nearest-neighbour enlargement)."""
    array = to_uint8(image)
    return resize_array(array, (array.shape[0] * scale, array.shape[1] * scale), "nearest") if scale > 1 else array


def write_turntable(frames: Tensor, folder: Path, stem: str, scale: int = 1, with_frames: bool = False) -> List[Path]:
    """Write ``frames [V, 3, H, W]`` (in [0, 1]) as one strip PNG ``{stem}_turntable.png`` and an animated GIF
    ``{stem}_turntable.gif`` (and, with ``with_frames``, each frame as ``{stem}_turntable/frame_NNN.png``); returns the
    strip's and the GIF's paths."""
    images = [enlarged(frame, scale) for frame in frames]
    strip_path, gif_path = folder / f"{stem}_turntable.png", folder / f"{stem}_turntable.gif"
    save_image(np.concatenate(images, axis=1), strip_path)
    save_gif(images, gif_path)
    if with_frames:
        for i, image in enumerate(images):
            save_image(image, folder / f"{stem}_turntable" / f"frame_{i:03d}.png")
    return [strip_path, gif_path]


__all__ = ["enlarged", "image_at_size", "load_pipeline", "normalised_pose", "orbit_cameras", "read_image_at_size",
           "read_pose", "read_pose_file", "read_user_image", "user_cameras", "write_turntable"]
