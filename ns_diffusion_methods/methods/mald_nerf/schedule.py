"""The iterative dataset update's noise schedule (MALD-NeRF, "iterative dataset update").

Every ``U`` training steps the training views are re-inpainted by partial DDIM, starting from the current NeRF render
noised to timestep ``t(k)``, where ``k`` is the update's index and ``K`` the schedule's last index::

    t(k) = t_max - (t_max - t_min) * sqrt(k / K),    k = 0, 1, ..., K

so the first update re-imagines the hole from the render noised to ``t_max`` and the last only refines the
(increasingly 3D-consistent) render from ``t_min``. Update ``k`` happens at training step ``(k + 1) * U``: ``K + 1``
updates at steps ``U, 2U, ..., (K + 1) U``. Before them, at the start of training, the captured images are inpainted
once from pure noise (the first inpainting, not part of the schedule).

``t_max`` and ``t_min`` are given as fractions of the diffusion model's ``T`` training timesteps (the paper does not
give them; recommended defaults t_max ≈ 0.98 T, t_min ≈ 0.2-0.4 T, near nerfiller's annealing from 1.0 to 0.4).
"""

from __future__ import annotations

import math
from typing import List, Optional


def idu_noise_level(k: int, num_updates: int, t_max: float, t_min: float) -> float:
    """``t(k) = t_max - (t_max - t_min) * sqrt(k / K)`` for ``0 <= k <= K`` (any units: fractions or timesteps).

    ``K = num_updates``; with ``K = 0`` the only update is ``k = 0``, at ``t_max``.
    """
    if num_updates < 0:
        raise ValueError(f"`num_updates` (K) must be >= 0, but got {num_updates}.")
    if not 0 <= k <= num_updates:
        raise ValueError(f"the update index k must be in [0, {num_updates}], but got {k}.")
    if num_updates == 0:
        return t_max
    return t_max - (t_max - t_min) * math.sqrt(k / num_updates)


def idu_timestep(k: int, num_updates: int, t_max: float, t_min: float, num_train_timesteps: int) -> int:
    """The integer start timestep of update ``k``: ``t(k)`` with ``t_max``/``t_min`` as fractions of ``T``.

    Rounded to the nearest timestep and clamped to ``[0, T - 1]``.
    """
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min <= t_max <= 1 (fractions of T), but got t_min={t_min}, t_max={t_max}.")
    level = idu_noise_level(k, num_updates, t_max, t_min)
    return int(min(max(round(level * num_train_timesteps), 0), num_train_timesteps - 1))


def update_index(step: int, update_every: int, num_updates: int) -> Optional[int]:
    """The update index ``k`` in ``0..K`` if training step ``step`` is an update step (``step = (k + 1) * U``),
    else None."""
    if update_every < 1:
        raise ValueError(f"`update_every` (U) must be >= 1, but got {update_every}.")
    if step <= 0 or step % update_every:
        return None
    k = step // update_every - 1
    return k if k <= num_updates else None


def update_steps(update_every: int, num_updates: int) -> List[int]:
    """The training steps of the ``K + 1`` dataset updates: ``U, 2U, ..., (K + 1) U``."""
    return [(k + 1) * update_every for k in range(num_updates + 1)]
