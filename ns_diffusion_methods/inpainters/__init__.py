"""Inpainting backends: a diffusers inpainting LDM (or its random-weight ``tiny`` version), classical OpenCV
inpainting, and the oracle of benchmarks.

Each backend's config extends :class:`InpainterConfig` and builds its :class:`Inpainter` with
``config.setup(device=...)``; :data:`AnnotatedInpainterUnion` offers them on the command line.
"""

from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, composite
from ns_diffusion_methods.inpainters.configs import AnnotatedInpainterUnion, inpainter_configs
from ns_diffusion_methods.inpainters.ldm import DEFAULT_MODEL, CustomizationConfig, LDMInpainterConfig
from ns_diffusion_methods.inpainters.opencv import OpenCVInpainterConfig
from ns_diffusion_methods.inpainters.oracle import OracleInpainterConfig

__all__ = [
    "DEFAULT_MODEL",
    "AnnotatedInpainterUnion",
    "CustomizationConfig",
    "Inpainter",
    "InpainterConfig",
    "LDMInpainterConfig",
    "OpenCVInpainterConfig",
    "OracleInpainterConfig",
    "composite",
    "inpainter_configs",
]
