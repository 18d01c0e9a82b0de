"""The dataset-update noise schedule t(k) by hand, and the samplers: patches always overlap and cover the mask."""

import math

import pytest
import torch

from ns_diffusion_methods.methods.mald_nerf.sampling import MaskPatchSampler, OutsideRaySampler, patch_indices
from ns_diffusion_methods.methods.mald_nerf.schedule import idu_noise_level, idu_timestep, update_index


def test_noise_schedule_follows_the_square_root_law():
    t_max, t_min, K = 0.98, 0.3, 8
    assert idu_noise_level(0, K, t_max, t_min) == pytest.approx(0.98)
    assert idu_noise_level(K, K, t_max, t_min) == pytest.approx(0.3)
    assert idu_noise_level(2, K, t_max, t_min) == pytest.approx(0.98 - 0.68 * 0.5)  # sqrt(2/8) = 1/2
    levels = [idu_noise_level(k, K, t_max, t_min) for k in range(K + 1)]
    assert all(a > b for a, b in zip(levels, levels[1:]))  # strictly decreasing
    # sqrt: faster than linear at first, so every interior value lies below the straight line
    for k in range(1, K):
        assert levels[k] < t_max - (t_max - t_min) * k / K
    # steps shrink: the first update moves furthest
    drops = [a - b for a, b in zip(levels, levels[1:])]
    assert all(a > b for a, b in zip(drops, drops[1:]))


def test_timesteps_are_rounded_fractions_of_T():
    T = 1000
    assert idu_timestep(0, 8, 0.98, 0.3, T) == 980
    assert idu_timestep(8, 8, 0.98, 0.3, T) == 300
    assert idu_timestep(1, 8, 0.98, 0.3, T) == round(1000 * (0.98 - 0.68 * math.sqrt(1 / 8)))
    assert idu_timestep(0, 4, 1.0, 0.5, T) == T - 1  # clamped into [0, T)
    assert idu_timestep(0, 0, 0.98, 0.3, T) == 980  # K = 0: a single update, at t_max
    with pytest.raises(ValueError, match="k must be in"):
        idu_timestep(1, 0, 0.98, 0.3, T)
    with pytest.raises(ValueError, match="t_min <= t_max"):
        idu_timestep(1, 4, 0.2, 0.5, T)


def test_updates_k_0_to_K_happen_at_steps_U_to_K_plus_1_times_U():
    hits = {step: update_index(step, 100, 3) for step in range(0, 601)}
    assert {s: k for s, k in hits.items() if k is not None} == {100: 0, 200: 1, 300: 2, 400: 3}


def _covered(corners: torch.Tensor, size: int, shape) -> torch.Tensor:
    covered = torch.zeros(shape, dtype=torch.bool)
    for view, top, left in corners.tolist():
        covered[view, top:top + size, left:left + size] = True
    return covered


def test_every_patch_overlaps_the_mask_and_patches_cover_it():
    masks = torch.zeros(3, 20, 24, dtype=torch.bool)
    masks[0, 0:3, 0:2] = True  # a corner blob
    masks[0, 12:14, 20:24] = True  # a second component touching the right border
    masks[2, 19, 10] = True  # a single pixel on the bottom border; view 1 has no object
    sampler = MaskPatchSampler(masks)
    size = 8
    corners = sampler.sample_corners(600, size, torch.Generator().manual_seed(0))
    assert set(corners[:, 0].tolist()) == {0, 2}  # never a view without object pixels
    assert (corners[:, 1] >= 0).all() and (corners[:, 1] <= 20 - size).all()
    assert (corners[:, 2] >= 0).all() and (corners[:, 2] <= 24 - size).all()
    for view, top, left in corners.tolist():
        assert masks[view, top:top + size, left:left + size].any()  # nerfstudio's sampler would never do this
    covered = _covered(corners, size, masks.shape)
    assert covered[masks].all()  # every object pixel was in some patch
    # patches also reach past the mask (context around the hole), but not into mask-free views
    assert covered[0].sum() > masks[0].sum() and not covered[1].any()


def test_patch_position_is_uniform_around_the_chosen_pixel():
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 32, 32] = True
    corners = MaskPatchSampler(masks).sample_corners(4000, 8, torch.Generator().manual_seed(1))
    # the pixel sits at offset (32 - top) in [0, 8): each of the 8 offsets about 1/8 of the time
    counts = torch.bincount(32 - corners[:, 1], minlength=8).float() / 4000
    assert counts.shape == (8,) and (counts - 1 / 8).abs().max() < 0.03


def test_patch_indices_layout():
    corners = torch.tensor([[2, 5, 7]])
    indices = patch_indices(corners, 3)
    assert indices.shape == (9, 3)
    assert indices[0].tolist() == [2, 5, 7] and indices[1].tolist() == [2, 5, 8] and indices[3].tolist() == [2, 6, 7]
    assert indices[-1].tolist() == [2, 7, 9]


def test_single_rays_avoid_the_object_and_invalid_pixels():
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[:, 2:8, 2:8] = True
    valid = torch.ones(2, 10, 10, dtype=torch.bool)
    valid[1, :, 0] = False
    rays = OutsideRaySampler(masks, valid).sample(5000, torch.Generator().manual_seed(0))
    assert rays.shape == (5000, 3)
    assert not masks[rays[:, 0], rays[:, 1], rays[:, 2]].any()
    assert valid[rays[:, 0], rays[:, 1], rays[:, 2]].all()
    # uniform over the allowed pixels: both views about half the rays
    assert abs(float((rays[:, 0] == 0).float().mean()) - 64 / (64 + 54)) < 0.03
    with pytest.raises(ValueError, match="No pixel outside"):
        OutsideRaySampler(torch.ones(1, 4, 4, dtype=torch.bool))
