"""What a run shows of its pseudo views: images and scalars in the training log, frustums in the viewer."""

from __future__ import annotations

from typing import Any, Dict

import torch

from ns_diffusion_methods.dataset_updates.pseudo_views.rounds import FixRoundResult
from ns_diffusion_methods.dataset_updates.pseudo_views.state import PseudoViews


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
