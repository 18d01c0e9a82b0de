"""Fixtures for the fixer tests: a tiny random Difix (built once per module) and synthetic image pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def tiny_difix():
    """A tiny Difix model (random weights, skips and LoRA non-zero, prompt embedded by a tiny CLIP)."""
    from ns_diffusion_methods.fixers.difix.model import DifixModel

    return DifixModel.tiny(seed=0).eval()


def write_synthetic_pairs(folder: Path, count: int, *, size: int = 32, test_count: int = 4, references: bool = False,
                          seed: int = 0) -> Path:
    """Smooth random images (clean) and their noisy versions (degraded) in Difix's JSON format; returns the JSON."""
    from ns_diffusion_methods.data.images import save_image

    generator = torch.Generator().manual_seed(seed)
    data = {"train": {}, "test": {}}
    for i in range(count + test_count):
        clean = F.interpolate(torch.rand(1, 3, 4, 4, generator=generator), size=(size, size), mode="bicubic",
                              align_corners=False).clamp(0, 1)[0]
        degraded = (clean + 0.15 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
        save_image(clean, folder / f"clean_{i}.png")
        save_image(degraded, folder / f"degraded_{i}.png")
        entry = {"image": f"degraded_{i}.png", "target_image": f"clean_{i}.png", "prompt": "remove degradation"}
        if references:
            save_image(clean.flip(-1), folder / f"ref_{i}.png")
            entry["ref_image"] = f"ref_{i}.png"
        data["test" if i >= count else "train"][f"pair{i:03d}"] = entry
    (folder / "data.json").write_text(json.dumps(data))
    return folder / "data.json"


@pytest.fixture
def synthetic_pairs():
    """:func:`write_synthetic_pairs`, for tests that write pair folders."""
    return write_synthetic_pairs
