"""GAN losses: hand values, the R1 penalty against finite differences, masking of real and fake inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.gan import (
    PatchDiscriminatorConfig,
    d_logistic_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    lazy_r1_loss,
    mask_outside,
    r1_penalty,
)


def _tiny_discriminator(seed=0):
    torch.manual_seed(seed)
    return PatchDiscriminatorConfig(patch_size=8, base_channels=4, max_channels=8).setup().double()


def test_logistic_losses_against_hand_values():
    real = torch.tensor([0.0, math.log(3.0)])
    fake = torch.tensor([math.log(3.0), 0.0])
    # softplus(0) = ln 2, softplus(-ln 3) = ln(4/3), softplus(ln 3) = ln 4
    expected_d = (math.log(2) + math.log(4 / 3)) / 2 + (math.log(4) + math.log(2)) / 2
    assert d_logistic_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)
    assert g_nonsaturating_loss(fake).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2, rel=1e-6)


def test_r1_penalty_matches_finite_differences():
    disc = _tiny_discriminator()
    real = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    logits, _ = disc(real)
    penalty = r1_penalty(logits, real)

    # d(sum of logits)/d(x_i) by central differences, then sum of squares per sample, mean over the batch
    eps = 1e-6
    flat = real.detach().flatten()
    grad = torch.zeros_like(flat)
    with torch.no_grad():
        for i in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[i] += eps
            minus[i] -= eps
            grad[i] = (disc(plus.view_as(real))[0].sum() - disc(minus.view_as(real))[0].sum()) / (2 * eps)
    expected = grad.view(2, -1).pow(2).sum(dim=1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)

    # the penalty back-propagates into the discriminator (create_graph): check one weight by finite differences
    weight = disc.from_rgb.weight
    (analytic,) = torch.autograd.grad(penalty, weight)
    index = (0, 1, 0, 0)
    values = []
    for delta in (eps, -eps):
        with torch.no_grad():
            weight[index] += delta
        x = real.detach().requires_grad_(True)
        values.append(r1_penalty(disc(x)[0], x).item())
        with torch.no_grad():
            weight[index] -= delta
    assert analytic[index].item() == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-4)


def test_lazy_r1_scales_by_gamma_half_interval():
    disc = _tiny_discriminator()
    real = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    x = real.clone().requires_grad_(True)
    plain = r1_penalty(disc(x)[0], x)
    lazy = lazy_r1_loss(disc, real, gamma=10.0, interval=16)
    assert lazy.item() == pytest.approx(10.0 / 2 * 16 * plain.item(), rel=1e-9)
    assert not real.requires_grad  # the caller's tensor is not modified


def test_mask_outside_zeroes_outside_for_real_and_fake_alike():
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[0, :, 2:5, 3:7] = True
    masks[1, :, 6:, :] = True
    real = torch.rand(2, 3, 8, 8) + 0.1
    fake = torch.rand(2, 3, 8, 8, requires_grad=True)
    for images, masked in ((real, mask_outside(real, masks)), (fake, mask_outside(fake, masks))):
        inside = masks.expand_as(images)
        assert torch.all(masked[~inside] == 0)
        assert torch.equal(masked[inside], images[inside])
    # float masks (resized, soft) count as inside above 0.5
    assert torch.equal(mask_outside(real, masks.float() * 0.9), mask_outside(real, masks))
    # no gradient reaches the rendered pixels outside the mask
    mask_outside(fake, masks).sum().backward()
    assert torch.equal(fake.grad, masks.expand_as(fake).float())


def test_feature_matching_against_hand_values_and_trains_generator_only():
    real = [torch.zeros(1, 2, 2, 2, requires_grad=True), torch.ones(1, 1, 1, 1, requires_grad=True)]
    fake = [torch.full((1, 2, 2, 2), 0.5, requires_grad=True), torch.full((1, 1, 1, 1), 3.0, requires_grad=True)]
    assert feature_matching_loss(real, fake, "l1").item() == pytest.approx((0.5 + 2.0) / 2)
    loss = feature_matching_loss(real, fake, "l2")
    assert loss.item() == pytest.approx((0.25 + 4.0) / 2)
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None
    with pytest.raises(ValueError, match="equal length"):
        feature_matching_loss(real, fake[:1])
