"""``ns-diffusion sample ssdnerf``: generate new objects with a trained SSDNeRF and render turntables.

Unconditional generation (paper §7.1): DDIM with 50 steps, eta = 0, x0_hat clipped to [-2, 2], EMA U-Net; the codes
are rendered with the EMA decoder from a ring of cameras around the object (distance, elevation, up direction and
intrinsics taken from the training cameras unless given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.errors import UserFacingError

CONSOLE = Console()


def turntable_cameras(reference: Cameras, num_frames: int, elevation_deg: Optional[float] = None,
                      distance: Optional[float] = None) -> Cameras:
    """A ring of cameras looking at the origin, like the dataset's cameras.

    Args:
        reference: the training cameras; their mean up vector is the ring's axis, their mean distance and elevation
            the defaults, and the first camera gives the intrinsics.
        num_frames: cameras on the ring (azimuths evenly spaced from 0).
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
    for i in range(num_frames):
        azimuth = 2 * math.pi * i / num_frames
        direction = math.cos(elevation) * (math.cos(azimuth) * e1 + math.sin(azimuth) * e2) + math.sin(elevation) * up
        z = direction / direction.norm()  # OpenGL: the camera looks down -z, i.e. towards the origin
        x = torch.linalg.cross(up, z)
        x = x / x.norm().clamp_min(1e-8)
        y = torch.linalg.cross(z, x)
        poses.append(torch.stack([x, y, z, z * distance], dim=1))
    return Cameras(camera_to_worlds=torch.stack(poses), fx=float(reference.fx[0]), fy=float(reference.fy[0]),
                   cx=float(reference.cx[0]), cy=float(reference.cy[0]), width=int(reference.width[0]),
                   height=int(reference.height[0]), camera_type=CameraType.PERSPECTIVE)


def generate_codes(model, num: int, ddim_steps: int = 50, seed: int = 0) -> Tensor:
    """``num`` new codes ``[num, 3, C, R, R]`` by unconditional DDIM sampling."""
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import guided_sample

    generator = torch.Generator().manual_seed(seed)
    return guided_sample(model, None, ddim_steps, 0.0, 0, num_objects=num, generator=generator)


def save_turntables(model, codes: Tensor, cameras: Cameras, output: Path, grid_columns: int = 8) -> List[Path]:
    """Render every code from ``cameras``; write ``sample_NNN/frame_MMM.png``, ``sample_NNN.gif`` and a grid
    ``samples.png`` (one row per sample, ``grid_columns`` frames). Returns the written grid and GIF paths."""
    from PIL import Image

    from ns_diffusion_methods.methods.ssdnerf.reconstruction import render_views

    output.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for i, code in enumerate(codes):
        frames = (render_views(model, code, cameras).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        folder = output / f"sample_{i:03d}"
        folder.mkdir(exist_ok=True)
        images = [Image.fromarray(frame) for frame in frames]
        for j, image in enumerate(images):
            image.save(folder / f"frame_{j:03d}.png")
        gif = output / f"sample_{i:03d}.gif"
        images[0].save(gif, save_all=True, append_images=images[1:], duration=80, loop=0)
        written.append(gif)
        picks = np.linspace(0, len(frames), num=min(grid_columns, len(frames)), endpoint=False).astype(int)
        rows.append(np.concatenate([frames[j] for j in picks], axis=1))
    grid = output / "samples.png"
    Image.fromarray(np.concatenate(rows, axis=0)).save(grid)
    return [grid] + written


@dataclass
class SampleSSDNeRF:
    """Generate new objects with a trained ssdnerf (DDIM from noise) and render turntables."""

    load_config: Path
    """The run's config.yml (from ns-train ssdnerf / ssdnerf-small)."""
    num: int = 4
    """Number of objects to generate."""
    output: Path = Path("renders/ssdnerf-samples")
    """Output folder: per sample a folder of frames and a GIF, plus samples.png and codes.pt."""
    ddim_steps: int = 50
    """DDIM steps (paper: 50)."""
    seed: int = 0
    """Seed of the initial noise."""
    num_frames: int = 24
    """Turntable frames per object."""
    elevation_deg: Optional[float] = None
    """Camera elevation in degrees (default: the training cameras' mean)."""
    distance: Optional[float] = None
    """Camera distance from the origin (default: the training cameras' mean)."""

    def main(self) -> int:
        """Load the run, sample, render."""
        from nerfstudio.utils.eval_utils import eval_setup

        from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel

        if not self.load_config.is_file():
            raise UserFacingError(f"No config file at {self.load_config}. Pass the config.yml of an ssdnerf run "
                                  f"(outputs/<experiment>/ssdnerf/<timestamp>/config.yml).")
        if self.num < 1 or self.ddim_steps < 1 or self.num_frames < 1:
            raise UserFacingError(f"--num, --ddim-steps and --num-frames must be >= 1, but got {self.num}, "
                                  f"{self.ddim_steps}, {self.num_frames}.")
        _, pipeline, checkpoint, step = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        if not isinstance(model, SSDNeRFModel):
            raise UserFacingError(f"{self.load_config} is a {type(model).__name__} run, not an ssdnerf run.")
        CONSOLE.print(f"Sampling {self.num} objects with {self.ddim_steps} DDIM steps (checkpoint {checkpoint}).")
        codes = generate_codes(model, self.num, self.ddim_steps, self.seed)
        cameras = turntable_cameras(pipeline.datamanager.train_dataset.cameras, self.num_frames, self.elevation_deg,
                                    self.distance).to(model.device)
        written = save_turntables(model, codes, cameras, self.output)
        torch.save(codes.cpu(), self.output / "codes.pt")
        CONSOLE.print(f"Wrote {written[0]} and {len(written) - 1} turntables to {self.output}.")
        return 0
