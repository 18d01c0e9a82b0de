"""A pure-PyTorch, differentiable 3D Gaussian splatting rasterizer with gsplat 1.4.0's semantics.

gsplat's ``rasterization`` needs CUDA at every stage (projection, tile intersection and compositing are compiled
kernels), and gsplat 1.4.0 has no complete CPU path. This module renders the same images on any device with ordinary
tensor operations, so splat-based methods train and test on a CPU. It follows gsplat's rules one by one, so that
images agree with gsplat to float precision:

1. **Projection** (EWA splatting): covariance ``R diag(s)^2 R^T`` from the normalised quaternion and scales, moved to
   the camera frame and projected with the perspective Jacobian, whose ``x/z, y/z`` are clamped to 1.3x the field of
   view; ``eps2d`` is added to the 2D covariance ("classic"), and "antialiased" mode multiplies the opacity by
   ``sqrt(det(cov2d) / det(cov2d + eps2d I))``.
2. **Culling**: a Gaussian is dropped for a camera when its depth is outside ``(near_plane, far_plane)``, its blurred
   2D covariance is singular, its radius ``ceil(3 sqrt(lambda_max))`` is at most ``radius_clip`` or its
   ``radius``-box misses the image. ``radii`` is 0 for dropped Gaussians.
3. **Tiles**: the image is cut into ``tile_size`` squares; a Gaussian is composited into the tiles its box
   ``[mean2d - radius, mean2d + radius]`` touches (only those: pixels of other tiles never see it), front to back by
   camera depth.
4. **Compositing** at pixel centres ``(x + 0.5, y + 0.5)``: ``alpha = min(0.999, o exp(-sigma))``, skipped when
   ``sigma < 0`` or ``alpha < 1/255``; a pixel stops before the Gaussian that would bring its transmittance to
   ``1e-4`` or below; ``color = sum_i alpha_i T_i c_i + T_final * background`` and ``alpha = 1 - T_final``.

Compositing is dense per tile: every Gaussian of a tile is evaluated at every pixel of the tile (padded to the
largest tile list, in chunks of tiles that bound memory). That is exact and differentiable by autograd, and fast
enough for the small images and Gaussian counts that CPU training uses.

For densification (gsplat's ``DefaultStrategy`` with ``absgrad=True``), ``meta["means2d"].absgrad`` is filled during
the backward pass with the per-pixel absolute 2D-mean gradients summed over pixels, as gsplat's kernel does (several
backward passes through one render add up, where gsplat keeps the last; training does one per render).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Literal, Optional, Tuple

import torch
from torch import Tensor

from ns_diffusion_methods.geometry.poses import quaternion_to_rotation

#: gsplat's compositing constants
ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
TRANSMITTANCE_MIN = 1e-4
#: how far (in units of the half field of view) the projection Jacobian may look outside the image (gsplat: 1.3)
FOV_CLAMP = 1.3

#: real spherical-harmonics constants (the 3DGS / gsplat convention)
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)
MAX_SH_DEGREE = 3

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]


def covariances(quats: Tensor, scales: Tensor) -> Tensor:
    """3D covariances ``R diag(scales)^2 R^T``: ``[N, 4], [N, 3] -> [N, 3, 3]``."""
    m = quaternion_to_rotation(quats) * scales[..., None, :]  # R diag(s)
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Project 3D Gaussians into pinhole cameras (EWA splatting, gsplat's ``fully_fused_projection`` unpacked).

    Returns:
        ``radii`` [C, N] int32 (0 = culled), ``means2d`` [C, N, 2] in pixels, ``depths`` [C, N] (camera z),
        ``conics`` [C, N, 3] (upper triangle ``a, b, c`` of the inverse blurred 2D covariance) and, when asked,
        ``compensations`` [C, N] (the antialiasing opacity factor).
    """
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rotation, means) + translation[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", rotation, covars, rotation)  # R Sigma R^T, [C, N, 3, 3]

    tx, ty, tz = torch.unbind(means_c, dim=-1)  # [C, N]
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    # the Jacobian is evaluated at a point clamped to a little outside the field of view, as gsplat does, so that
    # Gaussians far off-screen do not get huge, unstable 2D footprints
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    x_over_z = torch.minimum(torch.maximum(tx / tz, -(cx / fx + margin_x)), (width - cx) / fx + margin_x)
    y_over_z = torch.minimum(torch.maximum(ty / tz, -(cy / fy + margin_y)), (height - cy) / fy + margin_y)
    zeros = torch.zeros_like(tz)
    jacobian = torch.stack([fx / tz, zeros, -fx * x_over_z / tz,
                            zeros, fy / tz, -fy * y_over_z / tz], dim=-1).reshape(tz.shape + (2, 3))  # [C, N, 2, 3]
    covars2d = jacobian @ covars_c @ jacobian.transpose(-1, -2)  # [C, N, 2, 2]
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)  # [C, N, 2]

    a, b, c = covars2d[..., 0, 0], 0.5 * (covars2d[..., 0, 1] + covars2d[..., 1, 0]), covars2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d  # the screen-space low-pass filter
    det = a * c - b * b
    valid = (det > 0) & (tz > near_plane) & (tz < far_plane)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    compensations = torch.sqrt(torch.clamp(det_orig / det_safe, min=0.0)) if calc_compensations else None

    with torch.no_grad():
        half_trace = 0.5 * (a + c)
        lambda_max = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(torch.clamp(lambda_max, min=0.0)))
        radius = torch.where(valid & (radius > radius_clip), radius, torch.zeros_like(radius))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radii = torch.where(inside, radius, torch.zeros_like(radius)).to(torch.int32)
    return radii, means2d, tz, conics, compensations


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Evaluate real spherical harmonics of degree ``degree`` (0 to 3) along ``dirs``.

    Args:
        degree: the highest band used; coefficients of higher bands in ``coeffs`` are ignored.
        dirs: [..., 3] view directions (normalised here).
        coeffs: [..., K, 3] coefficients, ``K >= (degree + 1) ** 2``.

    Returns:
        [..., 3] colours (before gsplat's ``+ 0.5`` offset).
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"`sh_degree` must be in [0, {MAX_SH_DEGREE}] for the torch rasterizer, but is {degree}.")
    if coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"degree {degree} needs {(degree + 1) ** 2} SH coefficients, but got {coeffs.shape[-2]}")
    result = SH_C0 * coeffs[..., 0, :]
    if degree == 0:
        return result
    x, y, z = torch.unbind(dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12), dim=-1)
    x, y, z = x[..., None], y[..., None], z[..., None]
    result = result - SH_C1 * y * coeffs[..., 1, :] + SH_C1 * z * coeffs[..., 2, :] - SH_C1 * x * coeffs[..., 3, :]
    if degree == 1:
        return result
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    result = (result + SH_C2[0] * xy * coeffs[..., 4, :] + SH_C2[1] * yz * coeffs[..., 5, :]
              + SH_C2[2] * (2 * zz - xx - yy) * coeffs[..., 6, :] + SH_C2[3] * xz * coeffs[..., 7, :]
              + SH_C2[4] * (xx - yy) * coeffs[..., 8, :])
    if degree == 2:
        return result
    return (result + SH_C3[0] * y * (3 * xx - yy) * coeffs[..., 9, :] + SH_C3[1] * xy * z * coeffs[..., 10, :]
            + SH_C3[2] * y * (4 * zz - xx - yy) * coeffs[..., 11, :]
            + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[..., 12, :]
            + SH_C3[4] * x * (4 * zz - xx - yy) * coeffs[..., 13, :] + SH_C3[5] * z * (xx - yy) * coeffs[..., 14, :]
            + SH_C3[6] * x * (xx - 3 * yy) * coeffs[..., 15, :])


class _PixelOffsetsWithAbsGrad(torch.autograd.Function):
    """``means2d [T, K, 2], pixels [T, P, 2] -> means2d - pixels [T, P, K, 2]`` for a chunk of tiles.

    The backward pass returns the usual gradient (summed over pixels) and also adds the *absolute* per-pixel
    gradients, summed over pixels, into ``absgrad[camera, gaussian]``: gsplat's "AbsGrad" densification statistic
    (https://arxiv.org/abs/2404.10484).
    """

    @staticmethod
    def forward(ctx, means2d: Tensor, pixels: Tensor, absgrad: Tensor, camera: int, ids: Tensor,  # type: ignore
                valid: Tensor) -> Tensor:
        ctx.absgrad, ctx.camera = absgrad, camera
        ctx.save_for_backward(ids, valid)
        return means2d[:, None, :, :] - pixels[:, :, None, :]

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore
        ids, valid = ctx.saved_tensors
        abs_sum = grad.abs().sum(dim=1)[valid]  # [nnz, 2]
        ctx.absgrad[ctx.camera].index_add_(0, ids[valid], abs_sum.to(ctx.absgrad.dtype))
        return grad.sum(dim=1), None, None, None, None, None


def _block_lists(means2d: Tensor, radii: Tensor, depths: Tensor, reach: Tensor, tile_size: int, block_size: int,
                 width: int, height: int) -> Tuple[Tensor, Tensor]:
    """For one camera: the Gaussians each pixel block must composite, front to back, padded.

    A Gaussian is listed for a block when (1) the block's tile is one of the tiles gsplat assigns it (its
    ``radius`` box touches the tile) and (2) its ``reach`` box touches a pixel centre of the block, ``reach`` being the
    distance beyond which its alpha is below 1/255 everywhere. (2) only drops pixels where gsplat adds nothing, so the
    result is gsplat's, with far fewer Gaussian-pixel pairs than whole tiles.

    Returns:
        ``ids [B, K]`` (Gaussian indices) and ``valid [B, K]`` (False = padding), blocks in row-major order.
    """
    device = means2d.device
    blocks_x, blocks_y = math.ceil(width / block_size), math.ceil(height / block_size)
    visible = torch.nonzero((radii > 0) & (reach > 0)).squeeze(-1)
    if visible.numel() == 0:
        return (torch.zeros(blocks_x * blocks_y, 0, dtype=torch.long, device=device),
                torch.zeros(blocks_x * blocks_y, 0, dtype=torch.bool, device=device))
    visible = visible[torch.argsort(depths[visible], stable=True)]  # front to back
    centre = means2d[visible].detach()  # [V, 2] pixels
    radius = radii[visible].to(centre.dtype)[:, None]
    reach = reach[visible][:, None]

    def axis_members(axis: int, num_blocks: int, size: int) -> Tensor:  # [V, num_blocks]
        tiles = math.ceil(size / tile_size)
        lo = torch.clamp(torch.floor((centre[:, axis:axis + 1] - radius) / tile_size), 0, tiles)
        hi = torch.clamp(torch.ceil((centre[:, axis:axis + 1] + radius) / tile_size), 0, tiles)
        start = torch.arange(num_blocks, device=device, dtype=centre.dtype)[None] * block_size
        tile = torch.floor(start / tile_size)
        first = start + 0.5  # pixel centres of the block
        last = torch.clamp(start + block_size, max=size) - 0.5
        c = centre[:, axis:axis + 1]
        return (tile >= lo) & (tile < hi) & (c + reach >= first) & (c - reach <= last)

    in_x = axis_members(0, blocks_x, width)
    in_y = axis_members(1, blocks_y, height)
    member = (in_y[:, :, None] & in_x[:, None, :]).reshape(visible.numel(), -1).T  # [B, V], depth order
    counts = member.sum(dim=1)
    longest = int(counts.max())
    # a stable sort of "not a member" puts the members first, in depth order
    order = torch.argsort((~member).to(torch.int8), dim=1, stable=True)[:, :longest]  # [B, K]
    valid = torch.arange(longest, device=device)[None, :] < counts[:, None]
    return visible[order], valid


def _composite_camera(
    means2d: Tensor,  # [N, 2]
    conics: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    radii: Tensor,  # [N]
    depths: Tensor,  # [N]
    reach: Tensor,  # [N]
    background: Optional[Tensor],  # [D]
    width: int,
    height: int,
    tile_size: int,
    block_size: int,
    max_chunk_elements: int,
    absgrad: Optional[Tensor],
    camera: int,
) -> Tuple[Tensor, Tensor]:
    """Composite one camera's projected Gaussians: ``[H, W, D]`` colours and ``[H, W, 1]`` alphas."""
    device, dtype = means2d.device, means2d.dtype
    channels = colors.shape[-1]
    blocks_x, blocks_y = math.ceil(width / block_size), math.ceil(height / block_size)
    ids, valid = _block_lists(means2d, radii, depths, reach, tile_size, block_size, width, height)  # [B, K]
    num_blocks, per_block = ids.shape
    pixels_per_block = block_size * block_size

    # pixel centres of every block: [B, P, 2]
    local_y, local_x = torch.meshgrid(torch.arange(block_size, device=device),
                                      torch.arange(block_size, device=device), indexing="ij")
    block = torch.arange(num_blocks, device=device)
    pixel_x = ((block % blocks_x) * block_size)[:, None] + local_x.reshape(1, -1)  # [B, P]
    pixel_y = ((block // blocks_x) * block_size)[:, None] + local_y.reshape(1, -1)
    pixel_centres = torch.stack([pixel_x, pixel_y], dim=-1).to(dtype) + 0.5

    colours_out, alphas_out = [], []
    blocks_per_chunk = max(1, max_chunk_elements // max(1, pixels_per_block * per_block))
    for start in range(0, num_blocks, blocks_per_chunk):
        chunk = slice(start, min(num_blocks, start + blocks_per_chunk))
        chunk_ids, chunk_valid = ids[chunk], valid[chunk]  # [b, K]
        if per_block == 0:
            transmittance = torch.ones(chunk_ids.shape[0], pixels_per_block, device=device, dtype=dtype)
            colour = torch.zeros(chunk_ids.shape[0], pixels_per_block, channels, device=device, dtype=dtype)
        else:
            block_means = means2d[chunk_ids]  # [b, K, 2]
            if absgrad is not None and block_means.requires_grad:
                delta = _PixelOffsetsWithAbsGrad.apply(block_means, pixel_centres[chunk], absgrad, camera, chunk_ids,
                                                       chunk_valid)
            else:
                delta = block_means[:, None, :, :] - pixel_centres[chunk][:, :, None, :]  # [b, P, K, 2]
            conic = conics[chunk_ids][:, None]  # [b, 1, K, 3]
            dx, dy = delta[..., 0], delta[..., 1]
            sigma = 0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) + conic[..., 1] * dx * dy  # [b, P, K]
            alpha = torch.clamp_max(opacities[chunk_ids][:, None] * torch.exp(-sigma), ALPHA_MAX)
            keep = (sigma >= 0) & (alpha >= ALPHA_MIN) & chunk_valid[:, None]
            with torch.no_grad():  # early termination: stop before T would drop to TRANSMITTANCE_MIN
                keep &= torch.cumprod(1.0 - alpha * keep, dim=-1) > TRANSMITTANCE_MIN
            alpha = alpha * keep
            survive = torch.cumprod(1.0 - alpha, dim=-1)  # T after each Gaussian
            before = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)  # T before each
            weights = alpha * before  # [b, P, K]
            colour = torch.einsum("bpk,bkd->bpd", weights, colors[chunk_ids])
            transmittance = survive[..., -1]
        if background is not None:
            colour = colour + transmittance[..., None] * background
        colours_out.append(colour)
        alphas_out.append(1.0 - transmittance)

    # [B, P, D] blocks -> [H, W, D] image
    def to_image(blocks: Tensor) -> Tensor:
        c = blocks.shape[-1]
        image = blocks.reshape(blocks_y, blocks_x, block_size, block_size, c).permute(0, 2, 1, 3, 4)
        return image.reshape(blocks_y * block_size, blocks_x * block_size, c)[:height, :width]

    return to_image(torch.cat(colours_out)), to_image(torch.cat(alphas_out)[..., None])


def torch_rasterization(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,  # [C, D]
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    block_size: int = 4,
    max_chunk_elements: int = 1 << 22,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterize Gaussians into ``C`` pinhole cameras in pure PyTorch (same arguments and results as gsplat).

    Args:
        means: Gaussian centres [N, 3].
        quats: rotations [N, 4] as (w, x, y, z) quaternions; normalised here.
        scales: standard deviations along the rotated axes [N, 3] (already activated, i.e. positive).
        opacities: [N] in [0, 1].
        colors: post-activation colours [N, D] / [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] with
            ``sh_degree``.
        viewmats: world-to-camera matrices [C, 4, 4] (OpenCV convention: x right, y down, z forward).
        Ks: intrinsics [C, 3, 3].
        width: image width in pixels.
        height: image height in pixels.
        near_plane: Gaussians at camera depth <= this are culled. Default is 0.01.
        far_plane: Gaussians at camera depth >= this are culled. Default is 1e10.
        radius_clip: Gaussians whose pixel radius is at most this are culled. Default is 0.
        eps2d: added to the 2D covariance's diagonal (low-pass filter). Default is 0.3.
        sh_degree: when set, ``colors`` are SH coefficients evaluated up to this degree (0 to 3). Default is None.
        tile_size: tile side in pixels; decides which pixels a Gaussian reaches, as in gsplat. Default is 16.
        backgrounds: [C, D] colour behind the Gaussians (D = the rendered colour channels). Default is None (black).
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D" or "RGB+ED". Default is "RGB".
        absgrad: fill ``meta["means2d"].absgrad`` in the backward pass. Default is False.
        rasterize_mode: "classic" or "antialiased" (opacity compensation for the ``eps2d`` blur). Default is
            "classic".
        block_size: pixel blocks (inside tiles) whose Gaussian lists are culled further: only Gaussians that can
            reach a block with alpha >= 1/255 are evaluated there; it changes speed, never the result. Default is 4.
        max_chunk_elements: bound on ``blocks x pixels x Gaussians`` evaluated at once (memory). Default is 2^22.

    Returns:
        **render_colors** [C, H, W, D'] (D' = D, D + 1 with depth, or 1 for depth only), **render_alphas**
        [C, H, W, 1] and **meta**, a dict with ``radii`` [C, N], ``means2d`` [C, N, 2], ``depths``, ``conics``,
        ``opacities``, ``width``, ``height``, ``n_cameras``, ``tile_size`` and ``gaussian_ids`` (None: unpacked), the
        entries gsplat's densification strategies read.
    """
    num_gaussians, num_cameras = means.shape[0], viewmats.shape[0]
    assert means.shape == (num_gaussians, 3), means.shape
    assert quats.shape == (num_gaussians, 4), quats.shape
    assert scales.shape == (num_gaussians, 3), scales.shape
    assert opacities.shape == (num_gaussians,), opacities.shape
    assert viewmats.shape == (num_cameras, 4, 4), viewmats.shape
    assert Ks.shape == (num_cameras, 3, 3), Ks.shape
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"`render_mode` must be one of RGB, D, ED, RGB+D, RGB+ED, but is {render_mode!r}.")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"`rasterize_mode` must be 'classic' or 'antialiased', but is {rasterize_mode!r}.")

    radii, means2d, depths, conics, compensations = project_gaussians(
        means, covariances(quats, scales), viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, calc_compensations=rasterize_mode == "antialiased")
    opacities = opacities[None].expand(num_cameras, -1)  # [C, N]
    if compensations is not None:
        opacities = opacities * compensations

    if sh_degree is None:
        assert colors.shape[-2] == num_gaussians and colors.dim() in (2, 3), colors.shape
        colors = colors.expand(num_cameras, -1, -1) if colors.dim() == 2 else colors  # [C, N, D]
    else:
        assert colors.shape[-1] == 3 and colors.shape[-3] == num_gaussians and colors.dim() in (3, 4), colors.shape
        camera_positions = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None] - camera_positions[:, None]  # [C, N, 3]
        coeffs = colors.expand(num_cameras, -1, -1, -1) if colors.dim() == 3 else colors
        colors = torch.clamp_min(spherical_harmonics(sh_degree, dirs, coeffs) + 0.5, 0.0)  # [C, N, 3]

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = torch.zeros_like(backgrounds[:, :1])
    if backgrounds is not None:
        assert backgrounds.shape == (num_cameras, colors.shape[-1]), backgrounds.shape

    if tile_size % block_size != 0:
        raise ValueError(f"`block_size` ({block_size}) must divide `tile_size` ({tile_size}).")
    with torch.no_grad():
        # beyond `reach` pixels from its centre a Gaussian's alpha is below 1/255: sigma >= |d|^2 / (2 lambda_max)
        a, b, c = conics.unbind(-1)
        conic_min = 0.5 * (a + c) - torch.sqrt(0.25 * (a - c) ** 2 + b * b)  # = 1 / lambda_max(cov2d)
        log_ratio = torch.log(torch.clamp(opacities.detach() / ALPHA_MIN, min=1e-30))
        reach = torch.sqrt(2.0 * torch.clamp(log_ratio, min=0.0) / torch.clamp(conic_min, min=1e-12))
        reach = torch.where(log_ratio >= 0, reach * (1 + 1e-4) + 1e-3, torch.zeros_like(reach))

    absgrad_buffer = torch.zeros_like(means2d.detach()) if absgrad else None
    images, alphas = [], []
    for camera in range(num_cameras):
        image, alpha = _composite_camera(
            means2d[camera], conics[camera], opacities[camera], colors[camera], radii[camera], depths[camera],
            reach[camera], None if backgrounds is None else backgrounds[camera], width, height, tile_size,
            block_size, max_chunk_elements, absgrad_buffer, camera)
        images.append(image)
        alphas.append(alpha)
    render_colors, render_alphas = torch.stack(images), torch.stack(alphas)
    if render_mode in ("ED", "RGB+ED"):  # accumulated depth -> expected depth
        render_colors = torch.cat([render_colors[..., :-1],
                                   render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1)
    if absgrad_buffer is not None:
        means2d.absgrad = absgrad_buffer  # filled by the backward pass, like gsplat's kernel does
    meta: Dict[str, Any] = {
        "camera_ids": None, "gaussian_ids": None, "radii": radii, "means2d": means2d, "depths": depths,
        "conics": conics, "opacities": opacities, "width": width, "height": height, "n_cameras": num_cameras,
        "tile_size": tile_size, "tile_width": math.ceil(width / tile_size),
        "tile_height": math.ceil(height / tile_size),
    }
    return render_colors, render_alphas, meta
