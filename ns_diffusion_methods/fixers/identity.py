"""The identity fixer: returns its input unchanged. The ablation baseline of every method that uses a fixer (difix3d
with ``pipeline.fixer:identity`` trains on unfixed pseudo-view renders), and the CPU test double of the interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Type

import torch
from torch import Tensor

from ns_diffusion_methods.fixers.base import Fixer, FixerConfig, check_fixer_inputs


@dataclass
class IdentityFixerConfig(FixerConfig):
    """A fixer that returns its input unchanged: the ablation baseline (loads nothing)."""

    _target: Type = field(default_factory=lambda: IdentityFixer)

    def summary(self) -> str:
        return "identity"


class IdentityFixer(Fixer):
    """Returns the renders unchanged (references are accepted and ignored)."""

    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        check_fixer_inputs(images, references)
        return images.clone()
