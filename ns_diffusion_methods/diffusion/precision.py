"""Compute precision of pretrained diffusion models, one spelling for every command and config."""

from __future__ import annotations

from typing import Literal, Union

import torch

#: compute precisions, spelled as torch names them
DType = Literal["auto", "float32", "float16", "bfloat16"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: Union[str, torch.device], cuda_default: torch.dtype) -> torch.dtype:
    """``name`` as a torch dtype; ``auto`` is ``cuda_default`` on CUDA and float32 elsewhere (half precision on a
    CPU is slower and loses accuracy)."""
    if name == "auto":
        return cuda_default if torch.device(device).type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"`dtype` must be one of auto, {', '.join(_DTYPES)}, but got {name!r}.")
    return _DTYPES[name]
