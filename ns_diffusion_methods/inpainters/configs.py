"""The inpainting backends as one command-line choice, built the way nerfstudio builds its dataparser union.

A config field typed :data:`AnnotatedInpainterUnion` becomes a tyro subcommand that keeps the field's prefix:

.. code-block:: bash

    ns-train mald-nerf-small --data CAPTURE pipeline.inpainter:opencv --pipeline.inpainter.radius 3
    ns-train mald-nerf --data CAPTURE pipeline.inpainter:ldm --pipeline.inpainter.model tiny

A backend's flags follow its subcommand, after the other flags (tyro applies flags to the subcommand they follow). The
configs are import-light: their inpainters import diffusers or OpenCV only when built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import tyro

from ns_diffusion_methods.inpainters.base import InpainterConfig
from ns_diffusion_methods.inpainters.ldm import LDMInpainterConfig
from ns_diffusion_methods.inpainters.opencv import OpenCVInpainterConfig
from ns_diffusion_methods.inpainters.oracle import OracleInpainterConfig

#: subcommand name -> the backend's default config
inpainter_configs: Dict[str, InpainterConfig] = {
    "ldm": LDMInpainterConfig(),
    "opencv": OpenCVInpainterConfig(),
    "oracle": OracleInpainterConfig(),
}

if TYPE_CHECKING:
    AnnotatedInpainterUnion = InpainterConfig
else:
    AnnotatedInpainterUnion = tyro.extras.subcommand_type_from_defaults(
        inpainter_configs,
        descriptions={
            "ldm": "A diffusers inpainting LDM (Hub id, local folder, or 'tiny'), optionally customised on the scene.",
            "opencv": "Classical OpenCV inpainting: no weights, offline; ignores renders (no dataset updates).",
            "oracle": "Precomputed fills from a file (benchmarks); ignores renders (no dataset updates).",
        },
    )
    """Union of the inpainting backends; subcommands ``PREFIX:ldm``, ``PREFIX:opencv``, ``PREFIX:oracle``."""
