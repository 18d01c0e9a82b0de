"""The paper's denoiser is the default (e_φ(x_t), summed planes), novel views are rendered from one triplane without
per-view copies, and the benchmark's baselines and statistics compute what they say."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.methods.renderdiffusion import procedures
from ns_diffusion_methods.methods.renderdiffusion.config import renderdiffusion, renderdiffusion_small
from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoderConfig
from ns_diffusion_methods.methods.renderdiffusion.encoder import TriplaneEncoderConfig
from ns_diffusion_methods.methods.renderdiffusion.geometry import look_at, turntable
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionDenoiser, RenderDiffusionModelConfig
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

SIZE = 16


def _tiny(conditioning: str = "none", **model_kwargs) -> RenderDiffusionModelConfig:
    return RenderDiffusionModelConfig(
        encoder=TriplaneEncoderConfig(triplane_resolution=SIZE, triplane_channels=4, block_out_channels=(8, 16),
                                      attention_levels=(1,), layers_per_block=1, norm_num_groups=4,
                                      camera_conditioning=conditioning),
        decoder=TriplaneDecoderConfig(hidden_dim=16),
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=8, background=(0.0, 0.0, 0.0),
                                         chunk_size=1 << 20),
        **model_kwargs)


# ---------------------------------------------------------------------------------------------- the paper's denoiser
@pytest.mark.parametrize("model_config", [RenderDiffusionModelConfig(), renderdiffusion.config.pipeline.model,
                                          renderdiffusion_small.config.pipeline.model])
def test_defaults_and_presets_use_the_papers_denoiser(model_config):
    assert model_config.encoder.camera_conditioning == "none"
    assert model_config.decoder.plane_reduce == "sum"
    assert model_config.triplane_frame in ("yaw", "view")  # the encoder cannot see the camera: a view-relative frame


def test_default_encoder_reads_the_noisy_image_only():
    torch.manual_seed(0)
    denoiser = RenderDiffusionDenoiser(_tiny(), SIZE).eval()
    assert denoiser.encoder.unet.config.in_channels == 3  # x_t only, no camera channels
    image = torch.randn(1, 3, SIZE, SIZE)
    c2w = look_at(torch.tensor([[2.6, 0.0, 1.0], [0.0, 2.6, 1.0]]))  # same elevation, other azimuth
    intrinsics = torch.tensor([[17.0, 17.0, 8.0, 8.0]]).expand(2, 4)
    with torch.no_grad():
        planes = denoiser.encode(image.expand(2, -1, -1, -1), torch.tensor([3, 3]), c2w, intrinsics).planes
    torch.testing.assert_close(planes[0], planes[1])
    # control: with Plücker channels the same image from another camera gives another triplane
    conditioned = RenderDiffusionDenoiser(_tiny("plucker", triplane_frame="world"), SIZE).eval()
    assert conditioned.encoder.unet.config.in_channels == 9
    with torch.no_grad():
        planes = conditioned.encode(image.expand(2, -1, -1, -1), torch.tensor([3, 3]), c2w, intrinsics).planes
    assert (planes[0] - planes[1]).abs().max() > 1e-4


def test_a_world_frame_without_camera_input_is_refused():
    with pytest.raises(ValueError, match="camera-conditioning plucker"):
        RenderDiffusionDenoiser(_tiny(triplane_frame="world"), SIZE)


def test_summed_planes_equal_averaged_planes_with_the_first_layer_scaled_by_three():
    """Sum and mean differ by the factor 3 on the feature weights of the first layer (p's weights unchanged)."""
    from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoder

    torch.manual_seed(0)
    n_f = 4
    summed = TriplaneDecoder(TriplaneDecoderConfig(hidden_dim=8, plane_reduce="sum"), n_f)
    averaged = TriplaneDecoder(TriplaneDecoderConfig(hidden_dim=8, plane_reduce="mean"), n_f)
    averaged.load_state_dict(summed.state_dict())
    with torch.no_grad():
        averaged.mlp[0].weight[:, :n_f] *= 3  # the first n_f inputs are the plane features, then p
    planes, xyz = torch.randn(2, 3, n_f, 8, 8), torch.rand(2, 50, 3) * 2 - 1
    density_s, rgb_s = summed(planes, xyz)
    density_m, rgb_m = averaged(planes, xyz)
    torch.testing.assert_close(density_s, density_m)
    torch.testing.assert_close(rgb_s, rgb_m)
    plain = TriplaneDecoder(TriplaneDecoderConfig(hidden_dim=8, plane_reduce="mean"), n_f)
    plain.load_state_dict(summed.state_dict())  # control: without the factor the outputs differ
    assert (plain(planes, xyz)[0] - density_s).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------- evaluation memory
class PlaneWatcher:
    """Wraps a denoiser and records the planes tensor every ``render_rays`` call receives."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.seen = []

    def render_rays(self, triplanes, origins, directions):
        self.seen.append((tuple(triplanes.planes.shape), triplanes.planes.data_ptr(), origins.shape[1]))
        return self.denoiser.render_rays(triplanes, origins, directions)


def test_render_views_renders_many_views_from_the_one_triplane_without_copies():
    torch.manual_seed(0)
    denoiser = RenderDiffusionDenoiser(_tiny(), SIZE).eval()
    c2w_in = look_at(torch.tensor([[2.6, 0.3, 1.0], [0.2, 2.5, 1.2]]))
    intrinsics = torch.tensor([17.0, 17.0, 8.0, 8.0])
    with torch.no_grad():
        triplanes = denoiser.encode(torch.randn(2, 3, SIZE, SIZE), torch.tensor([0, 0]), c2w_in,
                                    intrinsics.expand(2, 4))
    V = 7
    views = torch.stack([turntable(c, V) for c in c2w_in])  # [2, V, 3, 4]
    view_k = intrinsics.expand(2, V, 4)
    watcher = PlaneWatcher(denoiser)
    renders = procedures.render_views(watcher, triplanes, views, view_k, SIZE, SIZE, rays_per_chunk=3 * SIZE * SIZE)
    assert renders.shape == (2, V, 3, SIZE, SIZE)
    # two triplanes x ceil(7 / 3) chunks, each call one triplane (batch 1) that shares the triplane's memory
    assert len(watcher.seen) == 2 * math.ceil(V / 3)
    ptrs = {triplanes.planes[b].data_ptr() for b in range(2)}
    for shape, ptr, rays in watcher.seen:
        assert shape == (1, *triplanes.planes.shape[1:])
        assert ptr in ptrs
        assert rays in (3 * SIZE * SIZE, SIZE * SIZE)
    # the renders are those of rendering each view on its own
    with torch.no_grad():
        for b in range(2):
            for v in (0, 4, 6):
                one = denoiser.render(triplanes[b: b + 1], views[b, v: v + 1], view_k[b, v: v + 1], SIZE, SIZE)
                expected = one["rgb"].reshape(SIZE, SIZE, 3).permute(2, 0, 1).clamp(0, 1)
                torch.testing.assert_close(renders[b, v], expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- benchmark helpers
def test_nearest_camera_means_average_the_k_closest_training_images():
    from ns_diffusion_methods.methods.renderdiffusion.benchmark import nearest_camera_means

    positions = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [10.0, 0, 0]])
    images = torch.stack([torch.full((2, 2, 3), v, dtype=torch.uint8) for v in (0, 51, 102, 255)])
    means = nearest_camera_means(positions, images, torch.tensor([[0.4, 0, 0], [9.0, 0, 0]]), k=2)
    assert means.shape == (2, 3, 2, 2)
    torch.testing.assert_close(means[0], torch.full((3, 2, 2), (0 + 51) / 2 / 255))
    torch.testing.assert_close(means[1], torch.full((3, 2, 2), (102 + 255) / 2 / 255))


def test_scores_on_object_pixels_ignore_the_background():
    from ns_diffusion_methods.methods.renderdiffusion.benchmark import gaussian_blur, score_views

    gt = torch.zeros(2, 3, 8, 8)
    pred = gt.clone()
    masks = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    masks[:, :, 2:4, 2:4] = True
    pred[:, :, 2:4, 2:4] = 0.1  # error 0.1 on the object only: object PSNR 20 dB
    pred[:, :, 6:, 6:] = 0.5  # large error on the background only
    scores = score_views(pred, gt, masks)
    assert scores["psnr_object"] == pytest.approx(20.0, abs=1e-4)
    mse = (4 * 0.01 + 4 * 0.25) / 64
    assert scores["psnr"] == pytest.approx(-10 * math.log10(mse), abs=1e-4)
    constant = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    dot = torch.zeros(1, 3, 9, 9)
    dot[..., 4, 4] = 1.0
    blurred = gaussian_blur(dot, 1.0)
    assert blurred[0, 0, 4, 4] < 0.2 and blurred.sum() == pytest.approx(3.0, abs=1e-4)


def test_summary_pairs_the_model_with_its_best_input_free_baseline():
    from ns_diffusion_methods.methods.renderdiffusion.benchmark import INPAINT, MODEL, RECON, summarise

    free_a, free_b = "mean A (no input)", "mean B (no input)"
    swap = "input swap: another object's view"
    results = {
        f"{RECON}|{MODEL}": {"psnr": [20.0, 22.0, 24.0], "psnr_object": [18.0, 20.0, 25.0], "ssim": [0.5] * 3},
        f"{RECON}|{free_a}": {"psnr": [19.0] * 3, "psnr_object": [15.0, 15.0, 15.0], "ssim": [0.4] * 3},
        f"{RECON}|{free_b}": {"psnr": [19.0] * 3, "psnr_object": [16.0, 17.0, 18.0], "ssim": [0.4] * 3},
        f"{RECON}|{swap}": {"psnr": [18.0] * 3, "psnr_object": [14.0] * 3, "ssim": [0.3] * 3},
        f"{INPAINT}|{MODEL} (RePaint)": {"psnr": [12.0, 14.0], "psnr_object": [10.0, 12.0]},
        f"{INPAINT}|per-pixel mean of the training images (no input)": {"psnr": [11.0, 11.0],
                                                                         "psnr_object": [9.0, 9.0]},
    }
    rows = {(r["task"], r["method"]): r for r in summarise([results])}
    model = rows[(RECON, MODEL)]
    assert model["psnr_object"] == pytest.approx(21.0) and model["psnr_object_std"] == pytest.approx(
        float(torch.tensor([18.0, 20.0, 25.0]).std()), abs=1e-3)
    diff = rows[(f"paired difference: {RECON}", f"model - best input-free baseline ({free_b})")]
    assert diff["psnr_object"] == pytest.approx(4.0)  # (2 + 3 + 7) / 3, against B (17 dB mean beats A's 15)
    std = float(torch.tensor([2.0, 3.0, 7.0]).std())
    assert diff["psnr_object_std"] == pytest.approx(std, abs=1e-3)
    assert diff["psnr_object_ci95"] == pytest.approx(1.96 * std / math.sqrt(3), abs=1e-3)
    assert rows[(f"paired difference: {RECON}", "model - input swap (what the input is worth)")][
        "psnr_object"] == pytest.approx(7.0)
    assert rows[(f"paired difference: {INPAINT}", "model - per-pixel training mean")]["psnr"] == pytest.approx(2.0)
