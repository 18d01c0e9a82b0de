"""``ns-diffusion sample ssdnerf``: generate new objects with a trained SSDNeRF and write turntables.

The sampling itself (DDIM from noise, turntable cameras and files) is in :mod:`ns_diffusion_methods.methods.ssdnerf.
sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import tyro
from rich.console import Console
from typing_extensions import Annotated

from ns_diffusion_methods.errors import UserFacingError

CONSOLE = Console(stderr=True)


@dataclass
class SampleCommand:
    """Generate new objects with a trained ssdnerf run (DDIM from noise) and write turntables."""

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """The run's config.yml (written by ns-train ssdnerf / ssdnerf-small)."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Output folder: per object a folder of frames and a GIF, plus samples.png and codes.pt. Default:
    outputs/ns-diffusion/sample/ssdnerf/<timestamp>."""
    num: int = 4
    """Number of objects to generate."""
    num_steps: int = 50
    """DDIM steps from noise to the object (SSDNeRF paper: 50)."""
    num_views: int = 24
    """Turntable frames per object."""
    seed: int = 0
    """Seed of the initial noise."""
    elevation_deg: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT")] = None
    """Camera elevation in degrees (default: the training cameras' mean)."""
    distance: Annotated[Optional[float], tyro.conf.arg(metavar="FLOAT")] = None
    """Camera distance from the origin (default: the training cameras' mean)."""

    def main(self) -> int:
        """Load the run, sample, render."""
        from nerfstudio.utils.eval_utils import eval_setup

        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.engine.progress import progress_bars, step_task
        from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel
        from ns_diffusion_methods.methods.ssdnerf.sample import generate_codes, save_turntables, turntable_cameras

        if not self.load_config.is_file():
            raise UserFacingError(f"No config file at {self.load_config}. Pass the config.yml of an ssdnerf run "
                                  f"(outputs/<experiment>/ssdnerf/<timestamp>/config.yml).")
        if self.num < 1 or self.num_steps < 1 or self.num_views < 1:
            raise UserFacingError(f"--num, --num-steps and --num-views must be >= 1, but got {self.num}, "
                                  f"{self.num_steps}, {self.num_views}.")
        output = self.output if self.output is not None else default_output("sample", "ssdnerf")
        _, pipeline, checkpoint, _ = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        if not isinstance(model, SSDNeRFModel):
            raise UserFacingError(f"{self.load_config} is a {type(model).__name__} run, not an ssdnerf run.")
        CONSOLE.print(f"Sampling {self.num} objects with {self.num_steps} DDIM steps (checkpoint {checkpoint}).")
        cameras = turntable_cameras(pipeline.datamanager.train_dataset.cameras, self.num_views, self.elevation_deg,
                                    self.distance).to(model.device)
        with progress_bars(CONSOLE) as progress:
            objects = progress.add_task(f"Generating {self.num} objects", total=self.num)
            with step_task(progress, f"  DDIM steps ({self.num} objects at once)") as on_step:
                codes = generate_codes(model, self.num, self.num_steps, self.seed, on_step=on_step)
            progress.update(objects, description=f"Rendering {self.num} turntables")
            written = save_turntables(model, codes, cameras, output,
                                      on_object=lambda done, total: progress.update(objects, completed=done))
        torch.save(codes.cpu(), output / "codes.pt")
        CONSOLE.print(f"Wrote {written[0]} and {len(written) - 1} turntables to {output}.")
        return 0
