"""A nerfstudio ``Trainer`` whose checkpoints survive a kill at any moment.

Stock nerfstudio 1.1.5 writes ``step-N.ckpt`` in place with ``torch.save``: a process killed during the write leaves a
truncated file that is also the newest one, so ``--load-dir`` then fails on it (and with ``save_only_latest_checkpoint``
the previous good checkpoint may already be gone on the next save). Methods of this package run for hours and carry
state no one wants to recompute (inpainted images, pseudo views, per-object codes), so their trainer

- writes each checkpoint to a temporary file in a sibling folder, flushes it to disk, and moves it into place with an
  atomic ``os.replace``; only then are older checkpoints deleted;
- resumes (``--load-dir``) from the newest checkpoint that is complete, ignoring anything else in the folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread

_CHECKPOINT = re.compile(r"^step-(\d+)\.ckpt$")


def latest_complete_step(checkpoint_dir: Path) -> Optional[int]:
    """The highest step with a ``step-N.ckpt`` file in ``checkpoint_dir`` (partial writes never land there)."""
    steps = [int(m.group(1)) for name in os.listdir(checkpoint_dir) if (m := _CHECKPOINT.match(name))]
    return max(steps) if steps else None


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` so that ``path`` is either absent, the old file, or the complete new file."""
    partial_dir = path.parent.parent / f".{path.parent.name}-partial"
    partial_dir.mkdir(parents=True, exist_ok=True)
    partial = partial_dir / f"{path.name}.{os.getpid()}"
    with open(partial, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


@dataclass
class DiffusionTrainerConfig(TrainerConfig):
    """nerfstudio's ``TrainerConfig`` with atomic checkpoints and resume from the newest complete checkpoint."""

    _target: Type = field(default_factory=lambda: DiffusionTrainer)


class DiffusionTrainer(Trainer):
    """nerfstudio ``Trainer`` with atomic checkpoint writes (see the module docstring)."""

    config: DiffusionTrainerConfig

    def _load_checkpoint(self) -> None:
        if self.config.load_dir is not None and self.config.load_step is None:
            step = latest_complete_step(Path(self.config.load_dir))
            if step is not None:
                self.config.load_step = step
        super()._load_checkpoint()

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """Save pipeline, optimizers, schedulers and scaler atomically, then prune older checkpoints if asked."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        atomic_torch_save({
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("step-*.ckpt"):
                if f != ckpt_path:
                    f.unlink()
