"""The denoiser's triplane rendering: 3D consistency across cameras and geometrically correct camera motion.

The triplanes are built by hand: the decoder is made a pass-through (one Linear layer set to the identity, no
position input), so feature channel 0 is the raw density and channels 1-3 the colour logits, averaged over the three
planes. A cube blob is dense only where all three of its plane squares overlap, i.e. at its 3D location.
"""

from __future__ import annotations

import torch

from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoderConfig
from ns_diffusion_methods.methods.renderdiffusion.encoder import TriplaneEncoderConfig
from ns_diffusion_methods.methods.renderdiffusion.geometry import look_at, project_points
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionDenoiser, RenderDiffusionModelConfig
from ns_diffusion_methods.methods.renderdiffusion.procedures import Triplanes
from ns_diffusion_methods.triplane import PLANE_AXES
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

SIZE = 32
FOCAL = 33.0
BACKGROUND = torch.tensor([0.5, 0.5, 0.5])


def _denoiser(frame: str = "world") -> RenderDiffusionDenoiser:
    config = RenderDiffusionModelConfig(
        encoder=TriplaneEncoderConfig(triplane_resolution=SIZE, triplane_channels=4, block_out_channels=(8, 16),
                                      attention_levels=(), layers_per_block=1, norm_num_groups=4,
                                      camera_conditioning="plucker" if frame == "world" else "none"),
        decoder=TriplaneDecoderConfig(num_hidden_layers=0, position_input=False, plane_reduce="mean",
                                      density_bias=0.0),
        renderer=BoxVolumeRendererConfig(num_samples=48, num_importance_samples=48, background=(0.0, 0.0, 0.0)),
        triplane_frame=frame, background="learned")
    denoiser = RenderDiffusionDenoiser(config, image_size=SIZE).eval()
    with torch.no_grad():
        linear = denoiser.decoder.mlp[0]
        linear.weight.copy_(torch.eye(4))
        linear.bias.zero_()
        denoiser.background.copy_(BACKGROUND)
    return denoiser


def _blob_planes(blobs, resolution: int = 64) -> torch.Tensor:
    """``[1, 3, 4, R, R]`` planes with cube blobs ``(centre, half_size, rgb)``; empty space elsewhere."""
    planes = torch.zeros(1, 3, 4, resolution, resolution)
    planes[:, :, 0] = -100.0  # raw density: softplus(mean) ~ 0 unless all three planes are high
    coords = -1 + (2 * torch.arange(resolution) + 1) / resolution  # pixel centres (align_corners=False)
    for centre, half, rgb in blobs:
        logits = torch.logit(torch.tensor(rgb).clamp(1e-3, 1 - 1e-3))
        for plane, (u_axis, v_axis) in enumerate(PLANE_AXES):
            inside_u = (coords - centre[u_axis]).abs() < half
            inside_v = (coords - centre[v_axis]).abs() < half
            square = inside_v[:, None] & inside_u[None, :]  # rows = v, columns = u
            # all three planes high: mean 40 (opaque); only two high: (80 - 100) / 3 < 0 (empty)
            planes[0, plane, 0][square] = 40.0
            for c in range(3):
                planes[0, plane, 1 + c][square] = logits[c]
    return planes


def _render(denoiser, planes, c2w, rotations=None):
    intrinsics = torch.tensor([[FOCAL, FOCAL, SIZE / 2, SIZE / 2]]).expand(c2w.shape[0], 4)
    rotations = torch.eye(3).expand(c2w.shape[0], 3, 3) if rotations is None else rotations
    triplanes = Triplanes(planes.expand(c2w.shape[0], -1, -1, -1, -1), rotations)
    with torch.no_grad():
        out = denoiser.render(triplanes, c2w, intrinsics, SIZE, SIZE)
    return {k: v.reshape(c2w.shape[0], SIZE, SIZE, -1) for k, v in out.items()}, intrinsics


def _pixel(c2w, intrinsics, point):
    uv, depth = project_points(point[None], c2w, intrinsics)
    col, row = uv[0]
    return int(torch.floor(row)), int(torch.floor(col)), float(depth[0])


def test_a_3d_point_renders_the_same_colour_from_two_cameras():
    denoiser = _denoiser()
    red_centre, green_centre = torch.tensor([0.25, -0.1, 0.1]), torch.tensor([-0.3, 0.35, -0.2])
    planes = _blob_planes([(red_centre, 0.12, (0.9, 0.1, 0.15)), (green_centre, 0.12, (0.1, 0.8, 0.2))])
    c2w = look_at(torch.tensor([[2.6, 0.4, 1.0], [0.3, -2.5, 1.2]]))
    out, intrinsics = _render(denoiser, planes, c2w)
    for centre, colour in ((red_centre, (0.9, 0.1, 0.15)), (green_centre, (0.1, 0.8, 0.2))):
        seen = []
        for cam in range(2):
            row, col, depth = _pixel(c2w[cam], intrinsics[cam], centre)
            seen.append(out["rgb"][cam, row, col])
            assert out["accumulation"][cam, row, col] > 0.99
            # the ray stops at the blob's surface, within its half size (plus the corner diagonal) of the centre
            assert depth - 0.12 * 1.8 - 0.05 < float(out["depth"][cam, row, col]) < depth
        torch.testing.assert_close(seen[0], seen[1], atol=0.02, rtol=0)
        torch.testing.assert_close(seen[0], torch.tensor(colour), atol=0.02, rtol=0)
    # a pixel that sees no blob shows the background in both cameras
    torch.testing.assert_close(out["rgb"][:, 0, 0], BACKGROUND.expand(2, 3), atol=1e-3, rtol=0)


def _centroid(accumulation):
    weights = accumulation[..., 0]
    rows, cols = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    return torch.stack([(weights * cols).sum() / weights.sum(), (weights * rows).sum() / weights.sum()])


def test_moving_the_camera_moves_the_render_as_projective_geometry_says():
    denoiser = _denoiser()
    centre = torch.tensor([0.1, 0.05, 0.0])
    planes = _blob_planes([(centre, 0.1, (0.2, 0.3, 0.9))])
    base = look_at(torch.tensor([[2.6, 0.0, 0.8]]))[0]
    right, up = base[:, 0], base[:, 1]
    moved_right = base.clone()
    moved_right[:, 3] += 0.4 * right
    moved_up = base.clone()
    moved_up[:, 3] += 0.3 * up
    orbit = look_at(torch.tensor([[0.0, 2.6, 1.2]]))[0]
    cameras = torch.stack([base, moved_right, moved_up, orbit])
    out, intrinsics = _render(denoiser, planes, cameras)
    for cam in range(4):
        expected, _ = project_points(centre[None], cameras[cam], intrinsics[cam])
        torch.testing.assert_close(_centroid(out["accumulation"][cam]), expected[0], atol=0.35, rtol=0)
    # the shifts themselves: a camera moved right sees the blob move left by f * d / depth (and up: blob moves down)
    depth = float(project_points(centre[None], base, intrinsics[0])[1][0])
    shift_right = _centroid(out["accumulation"][1]) - _centroid(out["accumulation"][0])
    shift_up = _centroid(out["accumulation"][2]) - _centroid(out["accumulation"][0])
    assert abs(float(shift_right[0]) + FOCAL * 0.4 / depth) < 0.35 and abs(float(shift_right[1])) < 0.35
    assert abs(float(shift_up[1]) - FOCAL * 0.3 / depth) < 0.35 and abs(float(shift_up[0])) < 0.35


def test_view_frame_triplanes_render_relative_to_the_input_camera():
    """With ``triplane_frame="view"`` the planes rotate with the input camera: a blob placed in the frame of one
    input camera renders, from any camera, as the world-frame blob at the rotated position."""
    denoiser = _denoiser("view")
    frame_centre = torch.tensor([0.2, 0.1, -0.1])
    planes = _blob_planes([(frame_centre, 0.1, (0.9, 0.6, 0.1))])
    input_cam = look_at(torch.tensor([[1.5, 1.8, 1.0]]))
    rotation = input_cam[0, :, :3].T  # world -> frame
    world_centre = rotation.T @ frame_centre
    target = look_at(torch.tensor([[-2.0, 1.5, 0.9]]))
    out, intrinsics = _render(denoiser, planes, target, rotations=rotation[None])
    expected, _ = project_points(world_centre[None], target[0], intrinsics[0])
    torch.testing.assert_close(_centroid(out["accumulation"][0]), expected[0], atol=0.35, rtol=0)
