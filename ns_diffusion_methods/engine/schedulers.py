"""Step schedules: the one place where "a value changes at these iterations" is computed.

- :func:`milestones_passed`: how many of a schedule's milestones a step has reached (a value that moves to its next
  phase at each milestone, e.g. SSDNeRF's K_in 16 -> 4 -> 2);
- :func:`step_decay`: ``gamma ** milestones_passed`` (a rate or weight multiplied by gamma at each milestone);
- :class:`WarmupStepSchedulerConfig`: a nerfstudio scheduler with a linear warm-up from a fraction of the learning
  rate, then a constant rate multiplied by ``gamma`` at each milestone (mmcv's ``policy='step'`` with
  ``warmup='linear'``, the learning-rate schedule of SSDNeRF's official configs). nerfstudio's own schedulers do
  either the warm-up (``ExponentialDecayScheduler``) or the steps (``MultiStepScheduler``), not both.

Import-light: torch and nerfstudio's scheduler base only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple, Type

from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig
from torch.optim import Optimizer, lr_scheduler


def milestones_passed(step: int, milestones: Tuple[int, ...]) -> int:
    """Number of ``milestones`` that are <= ``step`` (a milestone takes effect at its own step)."""
    return sum(step >= m for m in milestones)


def step_decay(step: int, milestones: Tuple[int, ...], gamma: float) -> float:
    """``gamma ** milestones_passed(step, milestones)``: 1 before the first milestone, gamma from it on, ..."""
    return gamma ** milestones_passed(step, milestones)


def warmup_step_factor(step: int, warmup_steps: int, warmup_ratio: float, milestones: Tuple[int, ...],
                       gamma: float) -> float:
    """Multiplier of the base learning rate at ``step``: ``warmup_ratio + (1 - warmup_ratio) * step / warmup_steps``
    during the warm-up (``warmup_ratio`` at step 0, 1 at ``warmup_steps``), times :func:`step_decay`."""
    warmup = 1.0
    if step < warmup_steps:
        warmup = warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps
    return warmup * step_decay(step, milestones, gamma)


@dataclass
class WarmupStepSchedulerConfig(SchedulerConfig):
    """Linear warm-up from ``warmup_ratio`` x the learning rate over ``warmup_steps`` iterations, then the learning
    rate, multiplied by ``gamma`` at each of ``milestones``."""

    _target: Type = field(default_factory=lambda: WarmupStepScheduler)
    warmup_steps: int = 500
    """Iterations of the linear warm-up (SSDNeRF: 500; 0: none)."""
    warmup_ratio: float = 1e-3
    """The warm-up starts at this fraction of the learning rate (SSDNeRF: 0.001)."""
    milestones: Tuple[int, ...] = ()
    """Iterations at which the learning rate is multiplied by ``gamma`` (SSDNeRF uncond: 500k; recons: none)."""
    gamma: float = 0.5
    """Factor applied at each milestone (SSDNeRF uncond: 0.5)."""


class WarmupStepScheduler(Scheduler):
    """See :class:`WarmupStepSchedulerConfig`."""

    config: WarmupStepSchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        cfg = self.config
        if cfg.warmup_steps < 0 or not 0.0 < cfg.warmup_ratio <= 1.0:
            raise ValueError(f"WarmupStepSchedulerConfig: warmup_steps must be >= 0 and warmup_ratio in (0, 1], but "
                             f"got {cfg.warmup_steps} and {cfg.warmup_ratio}; fix the optimizer's scheduler settings.")
        milestones = tuple(cfg.milestones)

        def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict leaves it out of checkpoints
            return warmup_step_factor(step, cfg.warmup_steps, cfg.warmup_ratio, milestones, cfg.gamma)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
