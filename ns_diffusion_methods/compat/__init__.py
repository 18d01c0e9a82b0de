"""What the package's own runs turn on in nerfstudio 1.1.5, and only for them.

Importing the package changes nothing in nerfstudio, torch or torchmetrics: nerfstudio imports every installed plugin
on every ``ns-*`` command, ``ns-train nerfacto`` included, and those commands must behave exactly as without the
package. The fixes below are switched on by :func:`enable_for_package_runs`, which the package's trainer
(:class:`~ns_diffusion_methods.engine.DiffusionTrainer`), its pipelines (:class:`~ns_diffusion_methods.engine.
DiffusionPipeline`, built by ``ns-eval``, ``ns-render`` and ``ns-viewer`` too), its dataparsers and the
``ns-diffusion`` command call when they start. It is idempotent:

1. the numpy types that nerfstudio 1.1.5 checkpoints contain are allow-listed for ``torch.load`` (which defaults to
   ``weights_only=True`` from torch 2.6), so ``--load-dir`` and ``--load-config`` load them without turning safe
   loading off (:mod:`~ns_diffusion_methods.compat.checkpoints`);
2. errors a user can act on are shown as ``Error: <message>`` without a traceback
   (:func:`~ns_diffusion_methods.errors.install_excepthook`);
3. pipelines can draw their rewritten training data (inpainted views, pseudo views) into the viewer of a loaded or
   resumed run (:mod:`~ns_diffusion_methods.compat.viewer`).

LPIPS offline is handled where the package builds models
(:func:`~ns_diffusion_methods.metrics.lpips.package_lpips_in_stock_models`); :func:`package_run` adds it for stock
nerfstudio models that the package's own commands build (``ns-diffusion benchmark`` trains ``nerfacto``,
``ns-diffusion fixer-pairs`` loads any run).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

_ENABLED = False


def enable_for_package_runs() -> None:
    """Turn on the fixes the package's runs need (safe to call more than once; see the module docstring)."""
    global _ENABLED
    if _ENABLED:
        return
    from ns_diffusion_methods.compat import checkpoints, viewer
    from ns_diffusion_methods.errors import install_excepthook

    checkpoints.allow_nerfstudio_checkpoints()
    install_excepthook()
    viewer.install()
    _ENABLED = True


@contextlib.contextmanager
def package_run() -> Iterator[None]:
    """Inside the block, any nerfstudio method (stock or the package's) runs as the package's methods run: the fixes
    of :func:`enable_for_package_runs` on, and LPIPS unavailable instead of fatal when its weights cannot be obtained
    (:func:`~ns_diffusion_methods.metrics.lpips.package_lpips_in_stock_models`)."""
    from ns_diffusion_methods.metrics.lpips import package_lpips_in_stock_models

    enable_for_package_runs()
    with package_lpips_in_stock_models():
        yield
