"""Box-bounded volume rendering and the triplane MLP decoder."""

from __future__ import annotations

import math

import torch

from ns_diffusion_methods.triplane.decoder import TriplaneMLPDecoder, trunc_exp
from ns_diffusion_methods.triplane.rendering import (
    BoxVolumeRendererConfig,
    composite,
    importance_samples,
    ray_aabb_intersect,
    stratified_samples,
)


def test_ray_box_intersection_by_hand():
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.5, 0.5, 0.0], [5.0, 5.0, 5.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_aabb_intersect(origins, directions, bound=1.0, min_near=0.2)
    assert torch.allclose(near[:2], torch.tensor([2.0, 0.2]))  # inside the box: near clamped to min_near
    assert torch.allclose(far[:2], torch.tensor([4.0, 0.5]))
    assert hit.tolist() == [True, True, False]
    assert float(far[2]) == float(near[2])  # a miss has an empty interval


def test_constant_density_gives_beer_lambert_and_white_background():
    sigma = 0.7
    renderer = BoxVolumeRendererConfig(num_samples=16, num_importance_samples=16).setup()
    origins = torch.tensor([[[0.0, 0.0, -3.0], [0.0, 0.0, -3.0], [3.0, 3.0, 3.0]]])
    directions = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.6, 0.8], [1.0, 0.0, 0.0]]])
    out = renderer(lambda xyz, d: (torch.full(xyz.shape[:-1], sigma), torch.zeros_like(xyz)), origins, directions)
    near, far, _ = ray_aabb_intersect(origins[0], directions[0], 1.0, 0.2)
    expected = 1 - torch.exp(-sigma * (far - near))
    assert torch.allclose(out["accumulation"][0, :, 0], expected, atol=1e-5)
    # black medium in front of a white background
    assert torch.allclose(out["rgb"][0], (1 - expected)[:, None].expand(3, 3), atol=1e-5)
    assert float(out["accumulation"][0, 2]) == 0.0


def test_composite_puts_depth_at_an_opaque_surface():
    t = torch.linspace(0.05, 1.95, 20)[None]
    density = torch.where(t > 1.2, torch.tensor(1e4), torch.tensor(0.0))
    out = composite(density, torch.ones(1, 20, 3), t, torch.tensor([0.0]), torch.tensor([2.0]))
    assert abs(float(out["depth"]) - float(t[t > 1.2][0])) < 1e-3
    assert abs(float(out["accumulation"]) - 1.0) < 1e-4


def test_importance_samples_land_where_the_weight_is():
    near, far = torch.zeros(4), torch.full((4,), 2.0)
    t = stratified_samples(near, far, 10, perturb=False)
    weights = torch.zeros(4, 10)
    weights[:, 7] = 1.0  # all weight in the 8th interval: between the midpoints around t[7]
    new = importance_samples(t, weights, near, far, 64, perturb=True, generator=torch.Generator().manual_seed(0))
    lo, hi = 0.5 * (t[0, 6] + t[0, 7]), 0.5 * (t[0, 7] + t[0, 8])
    inside = ((new >= lo - 1e-6) & (new <= hi + 1e-6)).float().mean()
    assert float(inside) > 0.95


def test_decoder_per_ray_directions_match_per_point_directions():
    torch.manual_seed(0)
    decoder = TriplaneMLPDecoder(plane_channels=4, hidden_dim=16)
    torch.nn.init.normal_(decoder.direction.weight)  # non-zero so that directions matter
    planes = torch.randn(2, 3, 4, 8, 8)
    dirs = torch.nn.functional.normalize(torch.randn(2, 5, 3), dim=-1)  # 5 rays
    xyz = torch.rand(2, 5, 7, 3) * 2 - 1  # 7 samples per ray
    per_point = decoder(planes, xyz.reshape(2, 35, 3), dirs[:, :, None].expand(2, 5, 7, 3).reshape(2, 35, 3))
    per_ray = decoder(planes, xyz.reshape(2, 35, 3), dirs)
    for a, b in zip(per_point, per_ray):
        assert torch.allclose(a, b, atol=1e-6)


def test_decoder_colour_ignores_direction_at_init_and_spans_zero_to_one():
    decoder = TriplaneMLPDecoder(plane_channels=6)
    planes = torch.randn(1, 3, 6, 8, 8)
    xyz = torch.rand(1, 10, 3) * 2 - 1
    d1 = torch.nn.functional.normalize(torch.randn(1, 10, 3), dim=-1)
    _, rgb1 = decoder(planes, xyz, d1)
    _, rgb2 = decoder(planes, xyz, -d1)
    assert torch.equal(rgb1, rgb2)  # the direction layer starts at zero
    with torch.no_grad():
        decoder.color.bias.fill_(100.0)
    _, rgb = decoder(planes, xyz, d1)
    assert torch.allclose(rgb, torch.full_like(rgb, 1.001), atol=1e-6)  # sigmoid saturation rescale: 1 + s


def test_trunc_exp_clamps_its_gradient():
    x = torch.tensor([0.0, 20.0, -20.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([1.0, 1e6, 1e-6]), rtol=1e-5)
    assert math.isclose(float(trunc_exp(torch.tensor(20.0))), math.exp(20.0), rel_tol=1e-5)
