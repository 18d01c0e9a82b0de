"""The Difix fixer's settings (import-light: the model code is imported only when the fixer is built)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Type, Union

import torch

from ns_diffusion_methods.diffusion import precision
from ns_diffusion_methods.diffusion.precision import DType
from ns_diffusion_methods.fixers.base import FixerConfig

#: the prompt and timestep Difix was trained with
DEFAULT_PROMPT = "remove degradation"
DEFAULT_TIMESTEP = 199
#: earlier spellings, accepted by :class:`DifixFixerConfig` for one release
LEGACY_DTYPES: Dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _difix_fixer() -> Type:
    from ns_diffusion_methods.fixers.difix.fixer import DifixFixer

    return DifixFixer


def resolve_dtype(name: str, device: Union[str, torch.device]) -> torch.dtype:
    """The fixer's compute dtype: ``auto`` is bfloat16 on CUDA (Difix's training precision), float32 elsewhere."""
    return precision.resolve_dtype(name, device, cuda_default=torch.bfloat16)


@dataclass
class DifixFixerConfig(FixerConfig):
    """Difix single-step fixer (Difix3D+, Wu et al., CVPR 2025); ``setup(device)`` loads its weights."""

    _target: Type = field(default_factory=lambda: _difix_fixer())
    model: str = "nvidia/difix_ref"
    """Weights: `nvidia/difix_ref` (with reference view), `nvidia/difix` (without), a folder in the same diffusers
    layout (for example written by `ns-diffusion train-fixer`), or `tiny` (random tiny model for tests and CPU runs)."""
    dtype: DType = "auto"
    """Compute precision: auto = bfloat16 on CUDA, float32 on CPU."""
    chunk_size: int = 2
    """Most images (each with its reference views) run through the network at once; lower it to bound memory."""
    resolution: Optional[Tuple[int, int]] = None
    """Working size (H, W) of the network; None = each image's own size rounded to a multiple of 8 (the diffusers
    pipeline's behaviour), (576, 1024) = Difix's training size. Outputs always have the input size."""
    prompt: str = DEFAULT_PROMPT
    """Text prompt the fixer was trained with (its embedding is computed once, at load)."""
    timestep: int = DEFAULT_TIMESTEP
    """Diffusion timestep of the single denoising step (Difix: 199, the paper's tau = 200)."""

    def __post_init__(self) -> None:
        self.dtype = self.canonical_dtype(self.dtype)  # type: ignore[assignment]
        if self.chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, but got {self.chunk_size}.")

    @staticmethod
    def canonical_dtype(name: str) -> str:
        """``name`` in the current spelling (``fp32``/``fp16``/``bf16`` become ``float32``/``float16``/``bfloat16``,
        with a deprecation warning)."""
        if name in LEGACY_DTYPES:
            warnings.warn(f"The fixer dtype {name!r} is now spelled {LEGACY_DTYPES[name]!r}; the old spelling will "
                          f"stop working in the next release.", DeprecationWarning, stacklevel=3)
            return LEGACY_DTYPES[name]
        return name

    def weights(self) -> Optional[str]:
        return self.model

    def summary(self) -> str:
        return f"difix {self.model}"
