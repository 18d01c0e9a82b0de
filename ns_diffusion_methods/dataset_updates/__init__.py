"""Dataset-update machinery shared by every method that rewrites its training data while it trains.

``mald-nerf`` re-inpaints its training views from the current renders; ``difix3d-*`` adds pseudo views fixed by
Difix. Both go through the same four steps, each a building block here:

1. render views of the current model without gradients, chunked, falling back to smaller chunks on GPU
   out-of-memory (:mod:`.render`);
2. run the 2D diffusion work on them, split across the ranks of a multi-GPU run and gathered so every rank holds the
   same result, each image processed exactly once (:mod:`ns_diffusion_methods.engine.distributed`);
3. keep the results in an :class:`~.store.ImageStore`, a module of registered buffers, so they are saved in
   checkpoints and restored by ``--load-dir``;
4. feed them to training (method-specific: the methods' datamanagers read the store).
"""

from ns_diffusion_methods.dataset_updates.render import render_camera_outputs, render_views
from ns_diffusion_methods.dataset_updates.store import ImageStore
from ns_diffusion_methods.engine.distributed import DistributedContext, run_sharded, shard_indices

__all__ = ["DistributedContext", "ImageStore", "render_camera_outputs", "render_views", "run_sharded",
           "shard_indices"]
