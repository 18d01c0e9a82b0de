"""A nerfstudio ``Trainer`` whose iteration is SSDNeRF's Algorithm 1.

nerfstudio's ``Trainer.train_iteration`` does one backward over the summed losses and steps every optimiser once.
Single-stage training steps the U-Net after the diffusion loss, then the per-object codes K_in times and the decoder
once, so the iteration is delegated to :meth:`SSDNeRFPipeline.train_step`; everything else (logging, checkpoints,
viewer, evaluation, resuming) is nerfstudio's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Type

import torch
from nerfstudio.engine.trainer import TRAIN_INTERATION_OUTPUT

from ns_diffusion_methods.engine.trainer import DiffusionTrainer, DiffusionTrainerConfig
from ns_diffusion_methods.errors import UserFacingError


@dataclass
class SSDNeRFTrainerConfig(DiffusionTrainerConfig):
    """The package's trainer config (atomic checkpoints, resume from the newest complete one), running
    :class:`SSDNeRFTrainer`."""

    _target: Type = field(default_factory=lambda: SSDNeRFTrainer)


class SSDNeRFTrainer(DiffusionTrainer):
    """Runs :meth:`SSDNeRFPipeline.train_step` as the training iteration."""

    def train_iteration(self, step: int) -> TRAIN_INTERATION_OUTPUT:
        from ns_diffusion_methods.methods.ssdnerf.pipeline import SSDNeRFPipeline

        if not isinstance(self.pipeline, SSDNeRFPipeline):
            raise UserFacingError(f"SSDNeRFTrainer needs an SSDNeRFPipeline, got {type(self.pipeline).__name__}.")
        losses, metrics = self.pipeline.train_step(step, self.optimizers)
        self.optimizers.scheduler_step_all(step)
        loss = functools.reduce(torch.add, losses.values())
        return loss, losses, metrics
