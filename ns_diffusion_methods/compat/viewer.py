"""Letting a pipeline draw its own state into nerfstudio's viewer once the scene is set up.

nerfstudio's viewer draws the training cameras with thumbnails of the *captured* images
(``Viewer.init_scene``), both in a training run (``ns-train``) and for a loaded run (``ns-viewer --load-config``).
Methods of this package train on data they rewrite: mald-nerf's inpainted training views, difix3d's pseudo views.
During training they redraw them after each update; a loaded run (or a resumed one) has them in its checkpoint, but
nerfstudio has no hook to show them. After ``init_scene`` this calls the pipeline's ``on_viewer_scene(viewer)`` where
the pipeline defines one, so ``ns-viewer`` shows the state the run was saved with.
"""

from __future__ import annotations

import functools
from types import ModuleType

from ns_diffusion_methods.compat.import_hooks import when_imported

#: name of the optional pipeline method called with the nerfstudio ``Viewer`` after its scene is drawn
HOOK = "on_viewer_scene"


def _patch_viewer(module: ModuleType) -> None:
    viewer_class = getattr(module, "Viewer", None)
    if viewer_class is None or getattr(viewer_class.init_scene, "_ns_diffusion_hooked", False):
        return
    original = viewer_class.init_scene

    @functools.wraps(original)
    def init_scene(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        pipeline = getattr(self, "pipeline", None)
        hook = getattr(type(pipeline), HOOK, None)
        if callable(hook):
            hook(pipeline, self)
        return result

    init_scene._ns_diffusion_hooked = True  # type: ignore[attr-defined]
    viewer_class.init_scene = init_scene


def install() -> None:
    """Hook ``nerfstudio.viewer.viewer.Viewer.init_scene``, now or when it is imported."""
    when_imported("nerfstudio.viewer.viewer", _patch_viewer)
