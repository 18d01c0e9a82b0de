"""The DDPM schedule with x0-prediction and the RePaint step."""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.methods.renderdiffusion.diffusion import ImageDiffusionConfig


@pytest.fixture()
def diffusion():
    return ImageDiffusionConfig(num_inference_steps=50).setup()


def test_linear_schedule_and_forward_process(diffusion):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()
    torch.testing.assert_close(diffusion.alphas_cumprod, abar, atol=1e-6, rtol=1e-5)
    x0, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    t = torch.tensor([0, 500, -1])
    noisy = diffusion.add_noise(x0, noise, t)
    torch.testing.assert_close(noisy[1], abar[500].sqrt() * x0[1] + (1 - abar[500]).sqrt() * noise[1])
    torch.testing.assert_close(noisy[2], x0[2])  # t = -1 is the clean sample


def test_timestep_chains(diffusion):
    chain = diffusion.timesteps_from(999)
    assert chain[0] == 999 and chain[-1] == 0 and len(chain) == 50
    assert all(a > b for a, b in zip(chain, chain[1:]))
    assert diffusion.timesteps_from(0) == [0]
    assert diffusion.timesteps_from(40, 5) == [40, 30, 20, 10, 0]
    with pytest.raises(ValueError, match="start timestep"):
        diffusion.timesteps_from(1000)


def test_x0_prediction_step_is_the_ddpm_posterior_mean_plus_noise(diffusion):
    chain = [999, 600, 0]
    x0_pred, x_t = torch.rand(2, 3, 5, 5) * 2 - 1, torch.randn(2, 3, 5, 5)
    abar = diffusion.alphas_cumprod
    a_t, a_p = abar[600], abar[0]
    beta = 1 - a_t / a_p
    mean = (a_p.sqrt() * beta / (1 - a_t)) * x0_pred + ((a_t / a_p).sqrt() * (1 - a_p) / (1 - a_t)) * x_t
    var = (1 - a_p) / (1 - a_t) * beta
    samples = torch.stack([diffusion.step(x0_pred, 600, x_t, chain, torch.Generator().manual_seed(s))
                           for s in range(400)])
    torch.testing.assert_close(samples.mean(0), mean, atol=4 * var.sqrt().item() / 20 + 1e-3, rtol=0)
    torch.testing.assert_close(samples.var(0).mean(), var, atol=0, rtol=0.15)
    # the last step returns x0_pred itself (no noise)
    torch.testing.assert_close(diffusion.step(x0_pred, 0, x_t, chain), x0_pred)


def test_repaint_step_keeps_known_pixels_at_the_noised_target(diffusion):
    chain = [999, 500, 0]
    H = W = 8
    known = torch.rand(1, 3, H, W) * 2 - 1
    mask = torch.zeros(1, 1, H, W)
    mask[..., :, : W // 2] = 1  # left half known
    x_t = torch.randn(1, 3, H, W)
    x0_pred = torch.rand(1, 3, H, W) * 2 - 1
    other_pred = torch.rand(1, 3, H, W) * 2 - 1
    a_prev = diffusion.alphas_cumprod[500]

    outs = torch.stack([diffusion.repaint_step(x0_pred, 999, x_t, chain, known, mask,
                                               torch.Generator().manual_seed(s)) for s in range(500)])
    known_px = outs[:, 0, :, :, : W // 2]
    # known pixels follow q(x_500 | x0): mean sqrt(abar) x0, variance 1 - abar, whatever the model predicted
    torch.testing.assert_close(known_px.mean(0), a_prev.sqrt() * known[0, :, :, : W // 2], atol=0.2, rtol=0)
    torch.testing.assert_close(known_px.var(0).mean(), 1 - a_prev, atol=0, rtol=0.1)
    same_seed = diffusion.repaint_step(other_pred, 999, x_t, chain, known, mask, torch.Generator().manual_seed(0))
    torch.testing.assert_close(same_seed[..., : W // 2], outs[0][..., : W // 2])
    # unknown pixels are the plain reverse step's (same random stream)
    plain = diffusion.step(x0_pred, 999, x_t, chain, torch.Generator().manual_seed(0))
    torch.testing.assert_close(outs[0][..., W // 2:], plain[..., W // 2:])
    # the final step lands exactly on the clean target on known pixels
    final = diffusion.repaint_step(x0_pred, 0, x_t, chain, known, mask, torch.Generator().manual_seed(1))
    torch.testing.assert_close(final[..., : W // 2], known[..., : W // 2])
    torch.testing.assert_close(final[..., W // 2:], x0_pred[..., W // 2:])


def test_renoise_goes_back_up_the_chain(diffusion):
    abar = diffusion.alphas_cumprod
    x_prev = torch.full((20000,), 0.5)
    x_t = diffusion.renoise(x_prev, 300, 400, torch.Generator().manual_seed(0))
    ratio = abar[400] / abar[300]
    assert abs(x_t.mean().item() - ratio.sqrt().item() * 0.5) < 0.01
    assert abs(x_t.var().item() - (1 - ratio).item()) < 0.01
