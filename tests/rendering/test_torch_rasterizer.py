"""The pure-torch rasterizer: projection and SH against gsplat's torch reference, compositing against a per-pixel
loop written from gsplat's kernel rules, gradients against finite differences, and against gsplat on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.rendering import project_gaussians, rasterization, resolve_backend, spherical_harmonics
from ns_diffusion_methods.rendering.torch_rasterizer import covariances, torch_rasterization


def tiny_scene(n: int = 6, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A few Gaussians in front of a pinhole camera looking down +z (OpenCV), 20 x 18 pixels."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([0.6, 0.6, 0.3], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.1 + 0.08
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.6 + 0.2
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype)[None].clone()
    viewmats[0, 2, 3] = 2.0
    Ks = torch.tensor([[[20.0, 0.0, 10.0], [0.0, 20.0, 9.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    return means, quats, scales, opacities, colors, viewmats, Ks, 20, 18


def reference_composite(means2d, conics, opacities, colors, radii, depths, width, height, tile_size,
                        background=None):
    """gsplat's compositing, one pixel and one Gaussian at a time (python loops)."""
    image = torch.zeros(height, width, colors.shape[-1], dtype=colors.dtype)
    alpha_image = torch.zeros(height, width, 1, dtype=colors.dtype)
    order = sorted(range(len(depths)), key=lambda i: float(depths[i]))
    for y in range(height):
        for x in range(width):
            tx, ty = x // tile_size, y // tile_size
            transmittance = 1.0
            colour = torch.zeros(colors.shape[-1], dtype=colors.dtype)
            for i in order:
                r = float(radii[i])
                if r <= 0:
                    continue
                mx, my = float(means2d[i, 0]), float(means2d[i, 1])
                # the tiles gsplat assigns the Gaussian to: [floor((m - r) / ts), ceil((m + r) / ts))
                if not (math.floor((mx - r) / tile_size) <= tx < math.ceil((mx + r) / tile_size)
                        and math.floor((my - r) / tile_size) <= ty < math.ceil((my + r) / tile_size)):
                    continue
                dx, dy = mx - (x + 0.5), my - (y + 0.5)
                a, b, c = (float(v) for v in conics[i])
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(opacities[i]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1.0 / 255.0:
                    continue
                if transmittance * (1 - alpha) <= 1e-4:
                    break
                colour += alpha * transmittance * colors[i]
                transmittance *= 1 - alpha
            if background is not None:
                colour += transmittance * background
            image[y, x] = colour
            alpha_image[y, x, 0] = 1 - transmittance
    return image, alpha_image


def test_projection_matches_gsplat_torch_reference():
    from gsplat.cuda import _torch_impl as reference

    torch.manual_seed(0)
    n = 300
    means = torch.randn(n, 3) * 0.6
    quats, scales = torch.randn(n, 4), torch.rand(n, 3) * 0.1 + 0.01
    viewmats = torch.eye(4)[None].repeat(2, 1, 1)
    viewmats[:, 2, 3] = 3.0
    viewmats[1, 0, 3] = 0.4
    Ks = torch.tensor([[[40.0, 0, 24], [0, 40, 20], [0, 0, 1]]]).repeat(2, 1, 1)
    covars = covariances(quats, scales)
    ref_covars, _ = reference._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    torch.testing.assert_close(covars, ref_covars)
    ours = project_gaussians(means, covars, viewmats, Ks, 48, 40, calc_compensations=True)
    theirs = reference._fully_fused_projection(means, ref_covars, viewmats, Ks, 48, 40, calc_compensations=True)
    radii = ours[0]
    assert torch.equal(radii, theirs[0]) and int((radii > 0).sum()) > 100
    visible = radii > 0
    torch.testing.assert_close(ours[1], theirs[1])  # means2d
    torch.testing.assert_close(ours[2], theirs[2])  # depths
    torch.testing.assert_close(ours[3][visible], theirs[3][visible])  # conics
    torch.testing.assert_close(ours[4][visible], theirs[4][visible])  # compensations


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_spherical_harmonics_match_gsplat_torch_reference(degree):
    from gsplat.cuda._torch_impl import _spherical_harmonics

    torch.manual_seed(degree)
    dirs, coeffs = torch.randn(50, 3), torch.randn(50, 16, 3)
    torch.testing.assert_close(spherical_harmonics(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs))


def test_covariances_rotate_the_scales_by_the_normalised_quaternion():
    """R diag(s)^2 R^T with R from the package's quaternion maths (w, x, y, z; normalised first)."""
    angle = 0.7
    quat = torch.tensor([[math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)]]) * 3.0  # unnormalised on purpose
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]])
    scales = torch.tensor([[0.5, 0.2, 0.1]])
    expected = rotation @ torch.diag(scales[0] ** 2) @ rotation.T
    torch.testing.assert_close(covariances(quat, scales)[0], expected)


def test_single_gaussian_by_hand():
    """An isotropic Gaussian on the optical axis: centre pixel alpha = o exp(-sigma) with sigma by hand."""
    s, depth, f, o = 0.05, 2.0, 20.0, 0.8
    means = torch.tensor([[0.0, 0.0, 0.0]])
    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 2, 3] = depth
    Ks = torch.tensor([[[f, 0.0, 10.0], [0.0, f, 10.0], [0.0, 0.0, 1.0]]])
    colours, alphas, meta = torch_rasterization(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), s),
                                                torch.tensor([o]), torch.tensor([[1.0, 0.5, 0.25]]), viewmats, Ks,
                                                20, 20, render_mode="RGB+ED")
    variance = (f * s / depth) ** 2 + 0.3  # projected variance + eps2d, in pixels^2
    assert float(meta["means2d"][0, 0, 0]) == pytest.approx(10.0)
    # pixel (9, 9) has centre (9.5, 9.5): offset 0.5 in x and y
    sigma = 0.5 * (0.25 + 0.25) / variance
    assert float(alphas[0, 9, 9, 0]) == pytest.approx(o * math.exp(-sigma), rel=1e-5)
    torch.testing.assert_close(colours[0, 9, 9, :3], torch.tensor([1.0, 0.5, 0.25]) * alphas[0, 9, 9, 0])
    assert float(colours[0, 9, 9, 3]) == pytest.approx(depth, rel=1e-5)  # expected depth of one Gaussian
    assert int(meta["radii"][0, 0]) == math.ceil(3 * math.sqrt(variance))


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_composite_matches_per_pixel_reference(mode):
    means, quats, scales, opacities, colors, viewmats, Ks, width, height = tiny_scene(n=12, seed=3)
    opacities = opacities.clone()
    opacities[0] = 0.999  # one nearly opaque splat exercises early termination
    background = torch.tensor([[0.2, 0.3, 0.4]])
    image, alpha, meta = torch_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                             backgrounds=background, tile_size=8, rasterize_mode=mode)
    ref_image, ref_alpha = reference_composite(meta["means2d"][0], meta["conics"][0], meta["opacities"][0], colors,
                                               meta["radii"][0], meta["depths"][0], width, height, 8, background[0])
    torch.testing.assert_close(image[0], ref_image, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha[0], ref_alpha, atol=1e-5, rtol=1e-5)
    assert float(alpha.max()) > 0.5


def test_blocks_change_speed_not_results():
    means, quats, scales, opacities, colors, viewmats, Ks, width, height = tiny_scene(n=40, seed=5)
    results = [torch_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                   block_size=b)[0] for b in (1, 4, 16)]
    # the same Gaussians blended in the same order: equal up to float32 rounding of the batched sums (1 ulp seen)
    torch.testing.assert_close(results[1], results[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[2], results[0], atol=1e-6, rtol=0)


def test_gradients_match_finite_differences():
    """Random cotangent v: autograd d<v, render>/dx against central differences, float64, every input."""
    scene = tiny_scene(n=6, dtype=torch.float64, seed=0)
    means, quats, scales, opacities, colors, viewmats, Ks, width, height = scene
    inputs = [means, quats, scales, opacities, colors]
    g = torch.Generator().manual_seed(1)
    v_rgb = torch.randn(1, height, width, 4, generator=g, dtype=torch.float64)
    v_alpha = torch.randn(1, height, width, 1, generator=g, dtype=torch.float64)

    def objective(*args):
        rgb, alpha, _ = torch_rasterization(*args, viewmats, Ks, width, height, render_mode="RGB+ED", tile_size=8)
        return (rgb * v_rgb).sum() + (alpha * v_alpha).sum()

    leaves = [x.clone().requires_grad_() for x in inputs]
    grads = torch.autograd.grad(objective(*leaves), leaves)
    eps = 1e-6
    for which, (x, grad) in enumerate(zip(inputs, grads)):
        numeric = torch.zeros_like(x)
        for index in range(x.numel()):
            plus, minus = [t.clone() for t in inputs], [t.clone() for t in inputs]
            plus[which].view(-1)[index] += eps
            minus[which].view(-1)[index] -= eps
            numeric.view(-1)[index] = (objective(*plus) - objective(*minus)) / (2 * eps)
        torch.testing.assert_close(grad, numeric, atol=1e-5, rtol=1e-4)
        assert float(grad.abs().max()) > 1e-3  # the gradient is not trivially zero


def test_absgrad_is_the_sum_of_absolute_per_pixel_gradients():
    means, quats, scales, opacities, colors, viewmats, Ks, width, height = tiny_scene(n=5, dtype=torch.float64,
                                                                                     seed=2)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, height, width, 3, generator=g, dtype=torch.float64)
    means = means.clone().requires_grad_()

    def render(absgrad: bool):
        image, _, meta = torch_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                             absgrad=absgrad, tile_size=8)
        return (image * v).sum(-1)[0], meta["means2d"]  # per-pixel objective [H, W], the 2D means

    per_pixel, means2d = render(absgrad=False)
    expected, signed = torch.zeros_like(means2d), torch.zeros_like(means2d)
    for y in range(height):
        for x in range(width):
            (grad,) = torch.autograd.grad(per_pixel[y, x], means2d, retain_graph=True)
            expected += grad.abs()
            signed += grad
    per_pixel, means2d = render(absgrad=True)
    means2d.retain_grad()
    per_pixel.sum().backward()
    torch.testing.assert_close(means2d.absgrad, expected)
    torch.testing.assert_close(means2d.grad, signed)
    assert float((expected - signed.abs()).max()) > 1e-6  # |sum| < sum |.|: per-pixel signs differ


def test_sh_colours_follow_gsplat_convention():
    """With SH degree 0, colour = SH_C0 * c0 + 0.5 (clamped at 0), as gsplat evaluates it."""
    means, quats, scales, opacities, _colors, viewmats, Ks, width, height = tiny_scene(n=4)
    coeffs = torch.randn(4, 4, 3)
    by_sh, _, _ = torch_rasterization(means, quats, scales, opacities, coeffs, viewmats, Ks, width, height,
                                      sh_degree=0)
    rgb = torch.clamp_min(0.28209479177387814 * coeffs[:, 0] + 0.5, 0.0)
    direct, _, _ = torch_rasterization(means, quats, scales, opacities, rgb, viewmats, Ks, width, height)
    torch.testing.assert_close(by_sh, direct)


def test_backend_choice():
    assert resolve_backend("cpu") == "torch"
    assert resolve_backend("cuda") == "gsplat"
    assert resolve_backend("cuda", "torch") == "torch"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_backend("cpu", "gsplat")
    means, quats, scales, opacities, colors, viewmats, Ks, width, height = tiny_scene()
    image, _, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    expected, _, _ = torch_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    assert torch.equal(image, expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matches_gsplat_on_cuda():
    """Images, alphas and gradients of every input agree with gsplat's CUDA rasterizer."""
    torch.manual_seed(0)
    n, width, height = 400, 64, 48
    means = (torch.rand(n, 3) - 0.5) * torch.tensor([2.0, 1.5, 1.0])
    quats, scales = torch.randn(n, 4), torch.rand(n, 3) * 0.08 + 0.01
    opacities, coeffs = torch.rand(n), torch.randn(n, 4, 3) * 0.5
    viewmats = torch.eye(4)[None].repeat(2, 1, 1)
    viewmats[:, 2, 3] = 3.0
    viewmats[1, 0, 3] = 0.3
    Ks = torch.tensor([[[60.0, 0, 32], [0, 60, 24], [0, 0, 1]]]).repeat(2, 1, 1)
    backgrounds = torch.rand(2, 4)

    def run(device, backend):
        leaves = [t.to(device).clone().requires_grad_() for t in (means, quats, scales, opacities, coeffs)]
        image, alpha, meta = rasterization(*leaves, viewmats.to(device), Ks.to(device), width, height, sh_degree=1,
                                           render_mode="RGB+ED", backgrounds=backgrounds.to(device), absgrad=True,
                                           backend=backend)
        meta["means2d"].retain_grad()
        g = torch.Generator(device="cpu").manual_seed(1)
        v_img = torch.randn(image.shape, generator=g).to(device)
        v_alpha = torch.randn(alpha.shape, generator=g).to(device)
        ((image * v_img).sum() + (alpha * v_alpha).sum()).backward()
        return image.cpu(), alpha.cpu(), [t.grad.cpu() for t in leaves], meta["means2d"].absgrad.cpu()

    ours = run("cuda", "torch")
    theirs = run("cuda", "gsplat")
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours[1], theirs[1], atol=1e-4, rtol=1e-4)
    for mine, reference in zip(ours[2], theirs[2]):
        torch.testing.assert_close(mine, reference, atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(ours[3], theirs[3], atol=1e-3, rtol=1e-2)
