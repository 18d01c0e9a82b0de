"""Compatibility layer between nerfstudio 1.1.5, current torch and machines without internet access.

:func:`activate` is called when the package is imported and is idempotent. It

1. allow-lists the numpy types that nerfstudio 1.1.5 checkpoints contain, so ``torch.load`` (which defaults to
   ``weights_only=True`` from torch 2.6) loads them without turning safe loading off
   (:mod:`~ns_diffusion_methods.compat.checkpoints`);
2. makes metrics whose backbone weights cannot be obtained (LPIPS' AlexNet/VGG) unavailable instead of fatal, in
   stock nerfstudio models too (:mod:`~ns_diffusion_methods.compat.metrics`);
3. lets pipelines draw their rewritten training data (inpainted views, pseudo views) into the viewer of a loaded or
   resumed run (:mod:`~ns_diffusion_methods.compat.viewer`).
"""

from __future__ import annotations

from ns_diffusion_methods.compat import checkpoints, metrics, viewer

_ACTIVE = False


def activate() -> None:
    """Install every compatibility fix (safe to call more than once)."""
    global _ACTIVE
    if _ACTIVE:
        return
    checkpoints.allow_nerfstudio_checkpoints()
    metrics.install()
    viewer.install()
    _ACTIVE = True
