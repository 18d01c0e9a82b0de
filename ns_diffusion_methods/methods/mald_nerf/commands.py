"""``ns-diffusion`` commands of mald-nerf: ``demo`` (the method on the built-in synthetic scene, on a CPU).

Import-light: the command's work (:mod:`ns_diffusion_methods.methods.mald_nerf.demo`) is imported inside ``main()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass
class DemoCommand:
    """Remove an object from a synthetic 3D capture with MALD-NeRF on the CPU (capture, train, evaluate, picture)."""

    output: Optional[Path] = None
    """Folder for the capture, the run, the picture and the metrics (replaced pieces are rewritten). Default:
    outputs/ns-diffusion/demo/<timestamp>."""
    seed: int = 0
    """Seed of the synthetic scene."""
    image_size: int = 64
    """Image width in pixels (the height is 3/4 of it)."""
    num_views: int = 24
    """Training views (with the object and its mask)."""
    num_eval_views: int = 8
    """Test views (rendered without the object)."""
    max_num_iterations: Optional[int] = None
    """Training iterations; default is mald-nerf-small's."""
    inpainter: str = "opencv"
    """Inpainter: 'opencv' (default, offline), 'tiny' (random-weight LDM), or a diffusers inpainting model id or
    folder."""

    def main(self) -> int:
        """Run the demo; returns the exit code (0 when the renders beat the captured views inside the hole)."""
        from ns_diffusion_methods.cli.outputs import default_output
        from ns_diffusion_methods.methods.mald_nerf.demo import run_demo

        output = self.output if self.output is not None else default_output("demo")
        return run_demo(output, seed=self.seed, image_size=self.image_size, num_views=self.num_views,
                        num_eval_views=self.num_eval_views, max_num_iterations=self.max_num_iterations,
                        inpainter=self.inpainter)
