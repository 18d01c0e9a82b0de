"""A stand-in for a run trained on a synthetic capture: the scene's exact depth, for tests of masks from depth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Tuple

import torch


class SceneDepthModel(torch.nn.Module):
    """Exact depth, accumulation and colour of the synthetic scene (rays traced, one per pixel); ``removable`` and
    ``shadow`` hold the last frame's object pixels and the pixels in its shadow."""

    def __init__(self, scene):
        super().__init__()
        self.scene = scene
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def get_outputs_for_camera(self, camera, obb_box=None):
        from ns_diffusion_methods.synthetic.render import render_rays

        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        shape = rays.origins.shape[:2]
        traced = render_rays(self.scene, rays.origins.reshape(-1, 3).double(), rays.directions.reshape(-1, 3).double())
        depth = traced["depth"].float()
        hit = torch.isfinite(depth)
        self.removable = traced["removable_hit"].reshape(shape)
        self.shadow = traced["removable_shadow"].reshape(shape)
        return {"depth": torch.where(hit, depth, torch.full_like(depth, 1e3)).reshape(*shape, 1),
                "accumulation": hit.float().reshape(*shape, 1), "rgb": traced["rgb"].float().reshape(*shape, 3)}


def training_cameras(capture: Path) -> List[Tuple[Path, Any]]:
    """The training frames of a synthetic capture as ``(image file, single camera)`` in the capture's coordinates."""
    from nerfstudio.cameras.cameras import Cameras

    meta = json.loads((capture / "transforms.json").read_text())
    frames = [f for f in meta["frames"] if "train" in f["file_path"]]
    c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32)[:, :3]
    cameras = Cameras(camera_to_worlds=c2w, fx=meta["fl_x"], fy=meta["fl_y"], cx=meta["cx"], cy=meta["cy"],
                      width=meta["w"], height=meta["h"])
    return [(capture / f["file_path"], cameras[i:i + 1]) for i, f in enumerate(frames)]
