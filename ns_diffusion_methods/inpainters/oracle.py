"""The oracle inpainter of benchmarks: precomputed fills looked up per view, and its config.

Benchmarks that study what supervises the hole (``mald-nerf-oracle``, ``mald-nerf-evidence``) isolate the loss from
the quality of an inpainting model by giving every variant the same fills, written beforehand to a file
(:func:`ns_diffusion_methods.methods.mald_nerf.benchmark.write_oracle`; for the synthetic capture either the true
background made slightly view-inconsistent, or per-view hallucinations: other content of the same room in every
view, never the truth).
Select it with ``pipeline.inpainter:oracle --pipeline.inpainter.oracle-file FILE``. Like a classical inpainter it
ignores renders and noise levels, so dataset updates are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Type, Union

import torch
from torch import Tensor

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, check_inputs, composite


@dataclass
class OracleInpainterConfig(InpainterConfig):
    """Precomputed fills per training view (benchmarks); ignores renders and noise levels."""

    backend: ClassVar[str] = "oracle"
    _target: Type = field(default_factory=lambda: OracleInpainter)
    oracle_file: Path = Path("oracle.pt")
    """File with `captured` and `fills`, uint8 [N, H, W, 3]: the training images and their fills (torch.save)."""

    def summary(self) -> str:
        """``oracle (FILE)``."""
        return f"oracle ({self.oracle_file})"


class OracleInpainter(Inpainter):
    """Looks up each image among the captured training images and returns that view's fill inside the mask.

    The lookup is by content (the closest captured image), so the oracle needs no view index.
    """

    uses_diffusion = False
    customizable = False
    first_inpainting = "the oracle's precomputed fills"

    def __init__(self, config: OracleInpainterConfig, device: Union[str, torch.device] = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        if not Path(config.oracle_file).is_file():
            raise DataError(f"The oracle file {config.oracle_file} does not exist. Write it first (the benchmarks "
                            f"`ns-diffusion benchmark mald-nerf-oracle` and `mald-nerf-evidence` do) and pass it with "
                            f"--pipeline.inpainter.oracle-file.")
        data = torch.load(config.oracle_file, map_location="cpu")
        self.captured = data["captured"].float() / 255.0  # [N, H, W, 3]
        self.fills = data["fills"].float() / 255.0

    @property
    def num_train_timesteps(self) -> int:
        """Nominal 1000 (the usual T), so that a noise schedule computed from it stays valid; it is not used."""
        return 1000

    @torch.no_grad()
    def inpaint(self, images: Tensor, masks: Tensor, start_timestep: Optional[int] = None,
                source: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """The oracle fill of each image's view inside its mask, the image itself outside."""
        check_inputs(images, masks, start_timestep, source, self.num_train_timesteps)
        fills = []
        for image in images:
            query = image.permute(1, 2, 0).cpu()  # [H, W, 3]
            distance = (self.captured - query[None]).abs().mean(dim=(1, 2, 3))
            fills.append(self.fills[int(distance.argmin())].permute(2, 0, 1))
        return composite(images, torch.stack(fills).to(images), masks)
