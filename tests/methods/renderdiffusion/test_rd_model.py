"""The encoder's camera conditioning, the view frame, and the RePaint reverse process through a real denoiser."""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.methods.renderdiffusion import procedures
from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoderConfig
from ns_diffusion_methods.methods.renderdiffusion.diffusion import ImageDiffusionConfig
from ns_diffusion_methods.methods.renderdiffusion.encoder import TriplaneEncoderConfig
from ns_diffusion_methods.methods.renderdiffusion.geometry import look_at, turntable
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionDenoiser, RenderDiffusionModelConfig
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

SIZE = 16


def _config(conditioning="plucker", frame="world", resolution=SIZE) -> RenderDiffusionModelConfig:
    return RenderDiffusionModelConfig(
        encoder=TriplaneEncoderConfig(triplane_resolution=resolution, triplane_channels=4, block_out_channels=(8, 16),
                                      attention_levels=(1,), layers_per_block=1, norm_num_groups=4,
                                      upsample_channels=8, camera_conditioning=conditioning),
        decoder=TriplaneDecoderConfig(hidden_dim=16),
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=8, background=(0.0, 0.0, 0.0)),
        triplane_frame=frame)


def _cameras():
    c2w = look_at(torch.tensor([[2.6, 0.0, 1.0], [0.5, 2.4, 1.3]]))
    intrinsics = torch.tensor([[17.0, 17.0, 8.0, 8.0]]).expand(2, 4)
    return c2w, intrinsics


@pytest.mark.parametrize("conditioning", ["plucker", "embedding"])
def test_encoder_output_depends_on_the_camera_only_when_conditioned(conditioning):
    torch.manual_seed(0)
    image, t = torch.randn(1, 3, SIZE, SIZE).expand(2, -1, -1, -1), torch.tensor([10, 10])
    c2w, intrinsics = _cameras()
    conditioned = RenderDiffusionDenoiser(_config(conditioning), SIZE).eval()
    planes = conditioned.encode(image, t, c2w, intrinsics).planes
    assert (planes[0] - planes[1]).abs().max() > 1e-4
    blind = RenderDiffusionDenoiser(_config("none", "yaw"), SIZE).eval()  # no camera input: a view-relative frame
    planes = blind.encode(image, t, c2w, intrinsics).planes
    torch.testing.assert_close(planes[0], planes[1])


@pytest.mark.parametrize("frame", ["yaw", "view"])
def test_camera_relative_frames_are_equivariant_to_turning_the_input_camera(frame):
    """In the yaw and view frames the encoder sees the input camera in its own frame, so turning the input camera
    about the scene's up axis gives the same triplane, and renders of correspondingly turned cameras are the same."""
    torch.manual_seed(0)
    denoiser = RenderDiffusionDenoiser(_config("plucker", frame), SIZE).eval()
    image = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    c2w, intrinsics = _cameras()
    turned = turntable(c2w[0], 5)[2:3]  # input camera turned by 144 degrees about +z
    a = denoiser.encode(image, torch.tensor([5]), c2w[:1], intrinsics[:1])
    b = denoiser.encode(image, torch.tensor([5]), turned, intrinsics[:1])
    torch.testing.assert_close(a.planes, b.planes, atol=1e-4, rtol=1e-4)
    novel = c2w[1:2]
    novel_turned = turntable(novel[0], 5)[2:3]
    with torch.no_grad():
        render_a = denoiser.render(a, novel, intrinsics[:1], SIZE, SIZE)["rgb"]
        render_b = denoiser.render(b, novel_turned, intrinsics[:1], SIZE, SIZE)["rgb"]
    torch.testing.assert_close(render_a, render_b, atol=1e-4, rtol=1e-4)


def test_upsampled_triplane_resolution_and_validation():
    denoiser = RenderDiffusionDenoiser(_config(resolution=4 * SIZE), SIZE)
    c2w, intrinsics = _cameras()
    planes = denoiser.encode(torch.randn(2, 3, SIZE, SIZE), torch.tensor([1, 2]), c2w, intrinsics).planes
    assert planes.shape == (2, 3, 4, 4 * SIZE, 4 * SIZE)
    with pytest.raises(ValueError, match="power of two"):
        RenderDiffusionDenoiser(_config(resolution=3 * SIZE), SIZE)


class RecordingDenoiser:
    """A real denoiser that also keeps every x_t it is given (to check what the reverse process feeds it)."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.inputs = []

    def encode(self, noisy_image, timesteps, camera_to_worlds, intrinsics):
        self.inputs.append((int(timesteps[0]), noisy_image.clone()))
        return self.denoiser.encode(noisy_image, timesteps, camera_to_worlds, intrinsics)

    def render(self, *args, **kwargs):
        return self.denoiser.render(*args, **kwargs)


def test_repaint_feeds_the_noised_target_on_known_pixels_and_keeps_them_at_the_end():
    torch.manual_seed(0)
    denoiser = RecordingDenoiser(RenderDiffusionDenoiser(_config(), SIZE).eval())
    diffusion = ImageDiffusionConfig(num_inference_steps=6).setup()
    c2w, intrinsics = _cameras()
    image = torch.ones(1, 3, SIZE, SIZE)  # x0 = +1 on every known pixel
    image[..., SIZE // 2:] = 0.3
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., 4:12, 4:12] = 1  # centred square to inpaint
    known = (mask == 0).expand(1, 3, SIZE, SIZE)
    _, inpainted, render = procedures.inpaint(denoiser, diffusion, image, mask, c2w[:1], intrinsics[:1],
                                              generator=torch.Generator().manual_seed(3))
    steps = diffusion.timesteps_from(999)
    assert [t for t, _ in denoiser.inputs] == steps
    abar = diffusion.alphas_cumprod
    x0 = image * 2 - 1
    for t, x_t in denoiser.inputs[1:]:  # the chain starts from pure noise; every later x_t is RePainted
        residual = (x_t - abar[t].sqrt() * x0)[known] / (1 - abar[t]).sqrt()  # should be standard normal
        assert abs(float(residual.mean())) < 4 / residual.numel() ** 0.5, t
        assert abs(float(residual.std()) - 1) < 0.15, t
    final_t, final_x = denoiser.inputs[-1]
    assert final_t == 0
    torch.testing.assert_close(inpainted[known], image[known])  # known pixels are kept exactly
    torch.testing.assert_close(inpainted[~known], render[~known])
    assert inpainted.min() >= 0 and inpainted.max() <= 1


def test_reconstruction_at_t0_is_one_clean_pass():
    torch.manual_seed(0)
    denoiser = RecordingDenoiser(RenderDiffusionDenoiser(_config(), SIZE).eval())
    diffusion = ImageDiffusionConfig(num_inference_steps=50).setup()
    c2w, intrinsics = _cameras()
    image = torch.rand(1, 3, SIZE, SIZE)
    triplanes, _ = procedures.reconstruct(denoiser, diffusion, image, c2w[:1], intrinsics[:1], t_r=0)
    assert len(denoiser.inputs) == 1 and denoiser.inputs[0][0] == 0
    torch.testing.assert_close(denoiser.inputs[0][1], image * 2 - 1)
    assert triplanes.planes.shape == (1, 3, 4, SIZE, SIZE)
    denoiser.inputs.clear()
    procedures.reconstruct(denoiser, diffusion, image, c2w[:1], intrinsics[:1], t_r=40, num_steps=3,
                           generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in denoiser.inputs] == [40, 20, 0]


def test_yaw_frame_keeps_gravity_and_puts_the_camera_at_azimuth_zero():
    from ns_diffusion_methods.methods.renderdiffusion.geometry import frame_rotations, to_frame

    c2w, _ = _cameras()
    in_frame = to_frame(c2w, frame_rotations(c2w, "yaw"))
    position = in_frame[:, :, 3]
    torch.testing.assert_close(position[:, 1], torch.zeros(2), atol=1e-6, rtol=0)  # on the x-z half plane
    assert (position[:, 0] > 0).all()
    torch.testing.assert_close(position[:, 2], c2w[:, 2, 3])  # height unchanged: +z stays up
    torch.testing.assert_close(position.norm(dim=-1), c2w[:, :, 3].norm(dim=-1))


@pytest.mark.parametrize("frame", ["yaw", "view"])
def test_image_aligned_planes_put_image_features_where_their_points_project(frame):
    """A feature computed at the image location of a 3D point lands on each frontal plane at that point's side."""
    from ns_diffusion_methods.methods.renderdiffusion.geometry import (
        frame_rotations,
        image_aligned_planes,
        project_points,
        to_frame,
    )

    N = 32
    world_cam = look_at(torch.tensor([[1.8, 1.6, 1.1]]))
    cam = to_frame(world_cam, frame_rotations(world_cam, frame))[0]  # the input camera in the triplane frame
    intrinsics = torch.tensor([33.0, 33.0, 16.0, 16.0])
    right, up = cam[:, 0], cam[:, 1]
    # frontal plane of this frame: the plane spanned by the two axes the image rows/columns follow
    frontal = {"yaw": 2, "view": 0}[frame]  # yz in the yaw frame, xy in the view frame
    (u_axis, v_axis) = ((1, 2), (0, 1))[0 if frame == "yaw" else 1]
    for sign_right, sign_up in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        point = 0.5 * sign_right * right + 0.5 * sign_up * up
        uv, _ = project_points(point[None], cam, intrinsics)
        col, row = (int(v) for v in uv[0].floor())
        feature_map = torch.zeros(1, 3, 1, N, N)
        feature_map[0, :, 0, row, col] = 1.0
        planes = image_aligned_planes(feature_map, frame)
        hot = torch.nonzero(planes[0, frontal, 0])[0]  # (plane row = v index, plane column = u index)
        v_coord, u_coord = (-1 + (2 * hot.float() + 1) / N).tolist()
        assert u_coord * float(point[u_axis]) > 0 and v_coord * float(point[v_axis]) > 0, (frame, point, hot)


def test_ema_of_the_denoiser_warms_up():
    """EMA <- d EMA + (1 - d) live with d = min(decay, (1 + n) / (10 + n)): 0.1 at the first update, 2/11 next."""
    from nerfstudio.data.scene_box import SceneBox

    torch.manual_seed(0)
    config = _config()
    config.ema_decay = 0.9999
    model = config.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1,
                         metadata={}, image_size=SIZE)
    live = next(iter(model.denoiser.parameters()))
    ema = next(iter(model.ema_denoiser.parameters()))
    start = ema.detach().clone()
    with torch.no_grad():
        live.add_(1.0)
    model.update_ema(step=0)
    torch.testing.assert_close(ema, 0.1 * start + 0.9 * live.detach())
    after_first = ema.detach().clone()
    model.update_ema(step=1)
    torch.testing.assert_close(ema, (2 / 11) * after_first + (9 / 11) * live.detach())
    assert int(model.ema_updates) == 2
