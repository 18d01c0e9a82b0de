"""Loading nerfstudio 1.1.5 checkpoints under torch >= 2.6.

torch 2.6 changed ``torch.load`` to ``weights_only=True`` by default. nerfstudio 1.1.5 calls ``torch.load`` without
the argument (``trainer.py`` for ``--load-dir``, ``eval_utils.py`` for ``ns-eval``, ``ns-render``, ``ns-viewer``,
``ns-export``) and its checkpoints contain ``numpy.float64`` learning rates written by its schedulers
(``optimizers/*/param_groups/*/lr`` and ``schedulers/*/_last_lr``). The weights-only unpickler refuses them with
``Unsupported global: GLOBAL numpy.core.multiarray.scalar``.

The narrowest fix is to allow-list exactly those numpy globals; safe loading stays on for everything else.
"""

from __future__ import annotations

import numpy as np
import torch


def numpy_checkpoint_globals() -> list:
    """The numpy objects a nerfstudio checkpoint pickles: the scalar reconstructor, ``dtype`` and the dtype classes."""
    try:  # numpy >= 2 moved the reconstructor to numpy._core
        from numpy._core.multiarray import scalar  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    return [scalar, np.dtype, *dtype_classes]


def allow_nerfstudio_checkpoints() -> None:
    """Allow-list the numpy globals of nerfstudio checkpoints for ``torch.load(weights_only=True)``."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 loads with pickle by default: nothing to do
        return
    add_safe_globals(numpy_checkpoint_globals())
