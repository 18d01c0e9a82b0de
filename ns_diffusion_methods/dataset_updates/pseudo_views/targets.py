"""Where pseudo cameras go: the evaluation cameras, or a camera path written by the nerfstudio viewer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ns_diffusion_methods.errors import DataError


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
