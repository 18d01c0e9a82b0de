"""Generation with a trained SSDNeRF: new codes by DDIM from noise, and turntables of them (used by ``ns-diffusion
sample ssdnerf``, :class:`ns_diffusion_methods.methods.ssdnerf.commands.SampleCommand`, and the benchmark).

Unconditional generation as in SSDNeRF: DDIM with 50 steps, eta = 0, x0_hat clipped to [-2, 2], EMA U-Net; the codes
are rendered with the EMA decoder from a ring of cameras around the object (distance, elevation, up direction and
intrinsics taken from the training cameras unless given).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from ns_diffusion_methods.engine.progress import StepCallback


def turntable_cameras(reference: Cameras, num_views: int, elevation_deg: Optional[float] = None,
                      distance: Optional[float] = None) -> Cameras:
    """A ring of cameras looking at the origin, like the dataset's cameras.

    Args:
        reference: the training cameras; their mean up vector is the ring's axis, their mean distance and elevation
            the defaults, and the first camera gives the intrinsics.
        num_views: cameras on the ring (azimuths evenly spaced from 0).
        elevation_deg, distance: override the defaults.
    """
    c2w = reference.camera_to_worlds.float().cpu()
    positions = c2w[:, :3, 3]
    up = c2w[:, :3, 1].mean(dim=0)
    up = up / up.norm().clamp_min(1e-8)
    if distance is None:
        distance = float(positions.norm(dim=-1).mean())
    if elevation_deg is None:
        sin_el = (positions @ up) / positions.norm(dim=-1).clamp_min(1e-8)
        elevation_deg = float(torch.rad2deg(torch.asin(sin_el.clamp(-1, 1))).mean())
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(up[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
    e1 = torch.linalg.cross(up, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(up, e1)
    elevation = math.radians(elevation_deg)
    poses = []
    for i in range(num_views):
        azimuth = 2 * math.pi * i / num_views
        direction = math.cos(elevation) * (math.cos(azimuth) * e1 + math.sin(azimuth) * e2) + math.sin(elevation) * up
        z = direction / direction.norm()  # OpenGL: the camera looks down -z, i.e. towards the origin
        x = torch.linalg.cross(up, z)
        x = x / x.norm().clamp_min(1e-8)
        y = torch.linalg.cross(z, x)
        poses.append(torch.stack([x, y, z, z * distance], dim=1))
    return Cameras(camera_to_worlds=torch.stack(poses), fx=float(reference.fx[0]), fy=float(reference.fy[0]),
                   cx=float(reference.cx[0]), cy=float(reference.cy[0]), width=int(reference.width[0]),
                   height=int(reference.height[0]), camera_type=CameraType.PERSPECTIVE)


def generate_codes(model, num: int, num_steps: int = 50, seed: int = 0,
                   on_step: Optional[StepCallback] = None) -> Tensor:
    """``num`` new codes ``[num, 3, C, R, R]`` by unconditional DDIM sampling with ``num_steps`` steps (all objects in
    one batch; ``on_step(done, num_steps)`` after each step)."""
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import guided_sample

    generator = torch.Generator().manual_seed(seed)
    return guided_sample(model, None, num_steps, 0.0, 0, num_objects=num, generator=generator, on_step=on_step)


def save_turntables(model, codes: Tensor, cameras: Cameras, output: Path, grid_columns: int = 8,
                    on_object: Optional[StepCallback] = None) -> List[Path]:
    """Render every code from ``cameras``; write ``sample_NNN/frame_MMM.png``, ``sample_NNN.gif`` and a grid
    ``samples.png`` (one row per sample, ``grid_columns`` frames). Returns the written grid and GIF paths.
    ``on_object(done, total)`` is called after each object."""
    from ns_diffusion_methods.data.images import save_gif, save_image
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import render_views

    output.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for i, code in enumerate(codes):
        frames = (render_views(model, code, cameras).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        folder = output / f"sample_{i:03d}"
        for j, frame in enumerate(frames):
            save_image(frame, folder / f"frame_{j:03d}.png")
        gif = output / f"sample_{i:03d}.gif"
        save_gif(list(frames), gif)
        written.append(gif)
        picks = np.linspace(0, len(frames), num=min(grid_columns, len(frames)), endpoint=False).astype(int)
        rows.append(np.concatenate([frames[j] for j in picks], axis=1))
        if on_object is not None:
            on_object(i + 1, len(codes))
    grid = output / "samples.png"
    save_image(np.concatenate(rows, axis=0), grid)
    return [grid] + written
