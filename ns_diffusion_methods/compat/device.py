"""Device defaults, so the package's methods run on a machine without CUDA without extra flags.

Stock nerfstudio defaults to ``--machine.device-type cuda`` and to tiny-cuda-nn; both stop on a CPU-only machine.
The package's method presets use these helpers instead, evaluated when the presets are built.
"""

from __future__ import annotations

from typing import Literal

import torch


def has_cuda() -> bool:
    """Whether a CUDA device is usable."""
    return torch.cuda.is_available()


def default_device_type() -> Literal["cpu", "cuda"]:
    """``cuda`` where available, else ``cpu`` (for ``machine.device_type``)."""
    return "cuda" if has_cuda() else "cpu"


def has_tcnn() -> bool:
    """Whether tiny-cuda-nn is installed (it is optional; nerfstudio falls back to torch without it)."""
    import importlib.util

    return importlib.util.find_spec("tinycudann") is not None


def default_implementation() -> Literal["tcnn", "torch"]:
    """nerfacto's ``implementation``: tiny-cuda-nn on CUDA when installed, else nerfstudio's torch fallback."""
    return "tcnn" if has_cuda() and has_tcnn() else "torch"
