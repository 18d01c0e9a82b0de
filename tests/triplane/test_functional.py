"""sample_triplane against a hand-written bilinear interpolation, point by point."""

import torch

from ns_diffusion_methods.triplane import PLANE_AXES, sample_triplane


def _bilinear(plane: torch.Tensor, u: float, v: float) -> torch.Tensor:
    """Bilinear lookup in a [C, R, R] plane at (u, v) in [-1, 1], align_corners=False, border padding."""
    R = plane.shape[-1]
    x = ((u + 1) * R - 1) / 2  # continuous column index
    y = ((v + 1) * R - 1) / 2  # continuous row index
    x = min(max(x, 0.0), R - 1.0)
    y = min(max(y, 0.0), R - 1.0)
    x0, y0 = int(x // 1), int(y // 1)
    x1, y1 = min(x0 + 1, R - 1), min(y0 + 1, R - 1)
    wx, wy = x - x0, y - y0
    return ((1 - wx) * (1 - wy) * plane[:, y0, x0] + wx * (1 - wy) * plane[:, y0, x1]
            + (1 - wx) * wy * plane[:, y1, x0] + wx * wy * plane[:, y1, x1])


def test_sample_triplane_matches_hand_bilinear():
    torch.manual_seed(0)
    planes = torch.randn(2, 3, 4, 5, 5, dtype=torch.float64)
    xyz = torch.rand(2, 7, 3, dtype=torch.float64) * 2.2 - 1.1  # a few points outside the cube test the border
    concat = sample_triplane(planes, xyz, reduce="concat")
    mean = sample_triplane(planes, xyz, reduce="mean")
    assert concat.shape == (2, 7, 12) and mean.shape == (2, 7, 4)
    for b in range(2):
        for n in range(7):
            expected = [_bilinear(planes[b, p], float(xyz[b, n, a]), float(xyz[b, n, c]))
                        for p, (a, c) in enumerate(PLANE_AXES)]
            torch.testing.assert_close(concat[b, n], torch.cat(expected))
            torch.testing.assert_close(mean[b, n], torch.stack(expected).mean(0))


def test_plane_axes_are_xy_xz_yz():
    # a plane that is constant along rows and ramps along columns reads the plane's first axis
    R = 8
    ramp = torch.linspace(-1, 1, R).repeat(R, 1)  # [R(v), R(u)], value depends on u only
    planes = torch.stack([ramp, ramp, ramp])[None, :, None]  # [1, 3, 1, R, R]
    xyz = torch.tensor([[[0.5, -0.2, 0.1]]])
    feats = sample_triplane(planes, xyz)[0, 0]
    # u of plane xy and xz is x (0.5), u of plane yz is y (-0.2); the ramp maps u to itself up to the pixel grid
    expected_u = torch.tensor([0.5, 0.5, -0.2])
    scale = (R - 1) / R  # pixel centres at +-(R-1)/R carry the ramp's end values +-1
    torch.testing.assert_close(feats, expected_u / scale, atol=1e-5, rtol=0)
