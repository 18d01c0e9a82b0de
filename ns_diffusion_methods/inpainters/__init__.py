"""Inpainting backends: a diffusers inpainting LDM, classical OpenCV inpainting, and a random-weight tiny LDM.

Pick one with :class:`InpainterConfig` (``model``) and build it with ``config.setup(device=...)``.
"""

from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, build_inpainter, composite

__all__ = ["Inpainter", "InpainterConfig", "build_inpainter", "composite"]
