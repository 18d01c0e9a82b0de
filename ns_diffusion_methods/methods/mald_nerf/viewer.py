"""Showing the current inpainted training images on the viewer's training cameras.

nerfstudio's viewer draws each training camera as a frustum with a thumbnail of its captured image
(``ViewerState.init_scene``). After every dataset update the thumbnails are replaced by the current inpainted images,
so the viewer shows what the NeRF is being trained towards. A viser scene node is replaced by adding one with the same
name; the new handle keeps the old pose and click behaviour.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: thumbnail height in pixels, as nerfstudio's viewer
THUMBNAIL_HEIGHT = 100


def thumbnail(image: torch.Tensor, height: int = THUMBNAIL_HEIGHT) -> np.ndarray:
    """``[H, W, 3]`` float in [0, 1] -> ``[height, W * height / H, 3]`` uint8 array."""
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    resized = F.interpolate(image.permute(2, 0, 1)[None].float(), size=(height, width), mode="bilinear",
                            align_corners=False)[0]
    return (resized.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def show_training_images(viewer_state: Any, datamanager: Any) -> int:
    """Replace the thumbnails of the viewer's training cameras by the current inpainted images.

    Returns:
        The number of cameras updated (0 when the viewer has drawn none).
    """
    handles = getattr(viewer_state, "camera_handles", None)
    if not handles:
        return 0
    scene = viewer_state.viser_server.scene
    cameras = datamanager.train_dataset.cameras
    updated = 0
    for index, old in list(handles.items()):
        camera = cameras[index]
        new = scene.add_camera_frustum(
            name=f"/cameras/camera_{index:05d}",
            fov=float(2 * np.arctan(float(camera.cx) / float(camera.fx))),
            scale=viewer_state.config.camera_frustum_scale,
            aspect=float(camera.cx) / float(camera.cy),
            image=thumbnail(datamanager.inpainted.get(index)),
            wxyz=old.wxyz,
            position=old.position,
            visible=old.visible,
        )

        def on_click(event, capture_idx: int = index) -> None:
            with event.client.atomic():
                event.client.camera.position = event.target.position
                event.client.camera.wxyz = event.target.wxyz
                viewer_state.current_camera_idx = capture_idx

        new.on_click(on_click)
        handles[index] = new
        updated += 1
    return updated
