"""SSDNeRF's diffusion maths: v-prediction loss weighting, DDIM sampling, the U-Net builder (the EMA: tests/engine)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ns_diffusion_methods.methods.ssdnerf.diffusion import (
    CodeUNetConfig,
    GaussianSchedule,
    build_unet,
    ddim_step,
    predict_x0,
    v_prediction_loss,
)


class OracleDenoiser(nn.Module):
    """Predicts the exact v for a known clean sample x0: v = alpha eps - sigma x0 with eps from x_t."""

    def __init__(self, schedule: GaussianSchedule, x0: torch.Tensor):
        super().__init__()
        self.schedule, self.x0 = schedule, x0

    def forward(self, x_t, t):
        alpha, sigma = self.schedule.alpha_sigma(t, x_t.dim())
        eps = (x_t - alpha * self.x0) / sigma
        return SimpleNamespace(sample=alpha * eps - sigma * self.x0)


class FixedOutput(nn.Module):
    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x_t, t):
        return SimpleNamespace(sample=self.output)


def test_schedule_matches_the_paper():
    schedule = GaussianSchedule()
    betas = 1 - (schedule.alpha**2)[1:] / (schedule.alpha**2)[:-1]
    assert torch.allclose(betas[[0, -1]], torch.tensor([1e-4 + (2e-2 - 1e-4) / 999, 2e-2]), atol=1e-6)
    assert torch.allclose(schedule.alpha**2 + schedule.sigma**2, torch.ones(1000), atol=1e-6)
    steps = schedule.ddim_timesteps(50)
    assert steps[:3] == [999, 979, 959] and steps[-1] == 19 and len(steps) == 50


def test_ddim_with_an_oracle_denoiser_returns_the_clean_sample():
    schedule = GaussianSchedule()
    x0 = torch.rand(2, 4, 8, 8) * 3 - 1.5
    oracle = OracleDenoiser(schedule, x0)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    timesteps = schedule.ddim_timesteps(10)
    for i, t in enumerate(timesteps):
        t_batch = torch.full((2,), t)
        t_prev = torch.full((2,), timesteps[i + 1] if i + 1 < len(timesteps) else -1)
        x0_hat = predict_x0(oracle, schedule, x, t_batch)
        assert torch.allclose(x0_hat, x0, atol=1e-4)
        x = ddim_step(x0_hat, x, t_batch, t_prev, schedule)
    assert torch.allclose(x, x0, atol=1e-4)  # the last step goes to t = -1: no noise left


def test_v_loss_is_the_snr_weighted_x0_error():
    """0.5 (v_hat - v)^2 (alpha/sigma)^(2w) sigma^2 == 0.5 (alpha/sigma)^(2w) (x0_hat - x0)^2 (paper's weighting)."""
    schedule = GaussianSchedule()
    x0 = torch.randn(3, 2, 4, 4)
    noise = torch.randn(3, 2, 4, 4)
    t = torch.tensor([5, 400, 990])
    v_hat = torch.randn(3, 2, 4, 4)
    for power in (0.5, 0.25):
        loss = v_prediction_loss(FixedOutput(v_hat), schedule, x0, t, noise, power)
        alpha, sigma = schedule.alpha_sigma(t, 4)
        x_t = alpha * x0 + sigma * noise
        x0_hat = alpha * x_t - sigma * v_hat
        expected = 0.5 * ((alpha / sigma) ** (2 * power)).flatten() * (x0_hat - x0).square().flatten(1).mean(1)
        assert torch.allclose(loss, expected, rtol=1e-4)


def test_unet_builder_follows_the_paper_layout():
    small = build_unet(CodeUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,),
                                      attention_head_dim=8, dropout=0.0, norm_num_groups=8), channels=6, resolution=8)
    assert small.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert small.config.up_block_types == ("AttnUpBlock2D", "UpBlock2D")
    assert small.config.resnet_time_scale_shift == "scale_shift"
    out = small(torch.randn(2, 6, 8, 8), torch.tensor([3, 999])).sample
    assert out.shape == (2, 6, 8, 8)
