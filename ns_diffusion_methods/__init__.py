"""ns-diffusion-methods: diffusion-powered 3D methods for nerfstudio.

Importing the package is free and inert: nerfstudio imports it (through its entry points) on every ``ns-*``
command, so it defines configs and nothing else, imports no heavy library (diffusers, transformers, peft, cv2,
lpips are imported where models are built) and changes nothing in nerfstudio, torch or torchmetrics. What the
package's own runs need is switched on when they start (:func:`ns_diffusion_methods.compat.enable_for_package_runs`).

This module must stay import-light: nerfstudio discovers dataparser plugins while its own data modules are still
half-imported, so nothing here may import nerfstudio.

Shape letters used across the package: B batch, V views, N points or rays, C channels, R plane resolution,
H height, W width, T diffusion timesteps.
"""

from __future__ import annotations

__version__ = "0.1.0"
