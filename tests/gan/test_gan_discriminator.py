"""The patch discriminator: shapes, features, configuration errors, and that it can learn."""

from __future__ import annotations

import pytest
import torch
import yaml

from ns_diffusion_methods.gan import PatchDiscriminatorConfig, d_logistic_loss, mask_outside
from ns_diffusion_methods.gan.discriminator import Downsample, minibatch_stddev


@pytest.mark.parametrize("patch_size", [8, 32])
def test_outputs_and_features(patch_size):
    torch.manual_seed(0)
    disc = PatchDiscriminatorConfig(patch_size=patch_size, base_channels=4, max_channels=16).setup()
    logits, features = disc(torch.rand(3, 3, patch_size, patch_size))
    assert logits.shape == (3,)
    # from_rgb + one block per halving down to 4x4
    sizes = [f.shape[-1] for f in features]
    assert sizes == [patch_size // 2 ** i for i in range(len(sizes))] and sizes[-1] == 4
    assert [f.shape[1] for f in features] == [min(4 * 2 ** i, 16) for i in range(len(features))]


def test_rejects_bad_sizes():
    with pytest.raises(ValueError, match="power of two"):
        PatchDiscriminatorConfig(patch_size=48).setup()
    disc = PatchDiscriminatorConfig(patch_size=8, base_channels=4).setup()
    with pytest.raises(ValueError, match=r"\[B, 3, 8, 8\]"):
        disc(torch.rand(2, 3, 16, 16))


def test_downsample_and_minibatch_stddev():
    x = torch.ones(1, 2, 8, 8)
    down = Downsample()(x)
    assert down.shape == (1, 2, 4, 4)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))  # a normalised blur keeps constants
    y = torch.stack([torch.zeros(2, 2, 2), torch.full((2, 2, 2), 2.0)])  # two samples, std 1 everywhere
    out = minibatch_stddev(y, group_size=4)
    assert out.shape == (2, 3, 2, 2)
    assert torch.allclose(out[:, 2], torch.ones(2, 2, 2), atol=1e-4)
    assert minibatch_stddev(torch.rand(3, 2, 4, 4), group_size=2).shape == (3, 3, 4, 4)  # group 1 when 2 ∤ 3


def test_discriminator_learns_to_separate_masked_patches():
    """A few steps on masked real (textured) vs masked fake (flat) patches lower the logistic loss."""
    torch.manual_seed(0)
    disc = PatchDiscriminatorConfig(patch_size=8, base_channels=8, max_channels=16).setup()
    optimizer = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.0, 0.99))
    masks = torch.zeros(8, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:6, 2:6] = True
    losses = []
    for _ in range(60):
        real = mask_outside(torch.rand(8, 3, 8, 8), masks)
        fake = mask_outside(torch.full((8, 3, 8, 8), 0.5), masks)
        loss = d_logistic_loss(disc(real)[0], disc(fake)[0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_config_survives_yaml():
    config = PatchDiscriminatorConfig(patch_size=32, base_channels=16)
    assert yaml.load(yaml.dump(config), Loader=yaml.Loader) == config
