"""Training callbacks for long work between iterations (dataset updates, pseudo-view rounds), kept out of the timing.

Methods hook nerfstudio's training loop one way: the ``TrainingCallback`` s their pipeline returns from
``get_training_callbacks``. nerfstudio runs callbacks inside its timed iteration (``Train Iter (time)``, ``Train Rays /
Sec`` and the ETA are averages of that time), which is right for per-step work and wrong for a minutes-long dataset
update every few thousand steps: the ETA jumps to hours and the iteration times lie.

A :class:`BetweenIterationsCallback` is a ``TrainingCallback`` that nerfstudio never runs itself (it has no location);
the package's trainer (:class:`~ns_diffusion_methods.engine.DiffusionTrainer`) runs it after each timed iteration,
holding the training lock (the viewer does not render meanwhile), and logs each run's duration as its own scalar
``"<name> (s)"``. Work due *before* step ``s`` runs after iteration ``s - 1``, which is the same point in training.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

from nerfstudio.engine.callbacks import TrainingCallback


class BetweenIterationsCallback(TrainingCallback):
    """Work run between training iterations, outside nerfstudio's iteration timer and ETA (see the module docstring).

    Args:
        name: what the work is (the logged scalar is ``"<name> (s)"``, e.g. ``"Dataset update (s)"``).
        func: called as ``func(*args, **kwargs, step=step)`` after the iteration of every ``step``; returns True when
            it did work (its duration is then logged), False or None when nothing was due.
        args, kwargs: extra arguments of ``func``.
    """

    def __init__(self, name: str, func: Callable[..., Optional[bool]], args: Optional[List[Any]] = None,
                 kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(where_to_run=[], func=func, args=args, kwargs=kwargs)
        self.name = name

    def run_between_iterations(self, step: int) -> Optional[float]:
        """Run the work after the iteration of ``step``; returns its duration in seconds when it did work."""
        from nerfstudio.utils import writer

        start = time.perf_counter()
        did_work = self.func(*self.args, **self.kwargs, step=step)
        duration = time.perf_counter() - start
        if not did_work:
            return None
        if writer.is_initialized():
            writer.put_scalar(name=f"{self.name} (s)", scalar=duration, step=step)
        return duration
