"""ns-diffusion-methods: diffusion-powered 3D methods for nerfstudio.

Importing the package activates the compatibility layer (:mod:`ns_diffusion_methods.compat`): nerfstudio imports
its plugins (this package is one, through its entry points) before it loads any checkpoint or builds any model, so
every nerfstudio command run with the package installed gets

- checkpoints of nerfstudio 1.1.5 loadable under torch >= 2.6 (numpy scalar types allow-listed for ``torch.load``);
- metrics whose backbone weights cannot be obtained offline reported as unavailable instead of crashing;
- errors a user can act on (:class:`~ns_diffusion_methods.errors.UserFacingError`) shown as ``Error: <message>``
  without a traceback (:func:`~ns_diffusion_methods.errors.install_excepthook`).

This module must stay import-light: nerfstudio discovers dataparser plugins while its own data modules are still
half-imported, so nothing here may import nerfstudio.

Shape letters used across the package: B batch, V views, N points or rays, C channels, R plane resolution,
H height, W width, T diffusion timesteps.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ns_diffusion_methods import compat as _compat
from ns_diffusion_methods import errors as _errors

_compat.activate()
_errors.install_excepthook()
