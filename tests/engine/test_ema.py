"""The one EMA of the package (SSDNeRF's decoder and U-Net, RenderDiffusion's denoiser) against hand computations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ns_diffusion_methods.engine.ema import stylegan_ema_decay, update_ema, warmup_ema_decay


class WithBuffer(nn.Module):
    def __init__(self, weight: float, buffer: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2,), weight))
        self.register_buffer("count", torch.tensor(buffer))


def test_update_averages_parameters_and_copies_buffers():
    ema, model = WithBuffer(1.0, 0.0), WithBuffer(5.0, 7.0)
    update_ema(ema, model, 0.75)
    assert ema.weight.tolist() == [2.0, 2.0]  # 0.75 * 1 + 0.25 * 5
    assert float(ema.count) == 7.0
    update_ema(ema, model, 0.5, copy_buffers=False)
    assert ema.weight.tolist() == [3.5, 3.5]  # 0.5 * 2 + 0.5 * 5
    model.count.fill_(9.0)
    update_ema(ema, model, 0.0, copy_buffers=False)
    assert ema.weight.tolist() == [5.0, 5.0] and float(ema.count) == 7.0


def test_update_refuses_modules_of_different_shape():
    with pytest.raises(ValueError):
        update_ema(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.9)


def test_stylegan_decay_by_hand():
    # steady state (SSDNeRF: half-life 4 kimg, batch 16): 0.5 ** (16 / 4000)
    assert stylegan_ema_decay(10**6, 16, 4.0, 0.05) == 0.5 ** (16 / 4000)
    # during the ramp-up the half-life is 5 % of the samples seen: step 9 -> 10 * 16 * 0.05 = 8 samples
    assert stylegan_ema_decay(9, 16, 4.0, 0.05) == 0.5 ** (16 / 8)
    assert stylegan_ema_decay(9, 16, 4.0, 0.0) == 0.5 ** (16 / 4000)


def test_warmup_decay_by_hand():
    assert warmup_ema_decay(0.9999, 0) == 0.1  # (1 + 0) / (10 + 0)
    assert warmup_ema_decay(0.9999, 90) == 0.91  # 91 / 100
    assert warmup_ema_decay(0.999, 10**6) == 0.999
