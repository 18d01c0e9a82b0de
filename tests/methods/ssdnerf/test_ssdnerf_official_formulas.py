"""SSDNeRF's loss weights, guidance scale, sampler timesteps and Langevin order against the official code's formulas
(``Lakonik/SSDNeRF``: ``loss_coef = 0.1 / 128^2``, ``scale_num_ray``, ``GaussianDiffusion.ddim_sample``), with the
values computed by hand; and the saturation of codes clipped to +-2."""

from __future__ import annotations

import math

import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE  # noqa: F401  (nerfstudio's console set-up, as the pipeline does)

from ns_diffusion_methods.methods.ssdnerf.benchmark import frechet_distance, image_statistics_distance, mean_interval
from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig, GaussianSchedule, predict_x0
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig
from ns_diffusion_methods.methods.ssdnerf.reconstruction import InputRays, finetune, guided_sample
from ns_diffusion_methods.methods.ssdnerf.training import RayBatch
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

# lambda_rend = 20 * 3 * (1 - exp(-0.1 * pixels / 128^2)), by hand:
#   128 px, 1 view:  60 * (1 - e^-0.1)     = 60 * 0.0951626 = 5.709755
#   128 px, 2 views: 60 * (1 - e^-0.2)     = 60 * 0.1812692 = 10.876155
#   32 px, 1 view:   60 * (1 - e^-0.00625) = 60 * 0.0062305 = 0.373831
#   32 px, 2 views:  60 * (1 - e^-0.0125)  = 60 * 0.0124222 = 0.745333
#   32 px, 16 views (the small preset's training objects): 16 * 32^2 = 128^2 pixels -> 5.709755
HAND = {(128, 1): 5.709755, (128, 2): 10.876155, (32, 1): 0.373831, (32, 2): 0.745333, (32, 16): 5.709755}


def tiny_model(seed: int = 0, resolution: int = 8):
    torch.manual_seed(seed)
    config = SSDNeRFModelConfig(
        code_channels=2, code_resolution=resolution, code_init_scale=0.5,
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=0),
        unet=CodeUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,),
                            attention_head_dim=8, dropout=0.0, norm_num_groups=8),
    )
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=box, num_train_data=10, metadata={"num_objects": 3})
    return model.eval()


def image_rays(num_objects: int, num_rays: int, seed: int, num_pixels: float) -> InputRays:
    """Rays through the box towards its centre, random target colours."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(num_objects, num_rays, 3, generator=g), dim=-1)
    origins = -2.5 * directions + 0.2 * torch.randn(num_objects, num_rays, 3, generator=g)
    target = torch.rand(num_objects, num_rays, 3, generator=g)
    order = torch.stack([torch.randperm(num_rays, generator=g) for _ in range(num_objects)])
    return InputRays(origins, directions, target, torch.full((num_objects,), float(num_pixels)), order)


def test_rendering_weight_counts_pixels_in_128px_views():
    model = tiny_model()
    for (size, views), expected in HAND.items():
        weight = float(model.rendering_weight(torch.tensor([views * size * size])))
        assert math.isclose(weight, expected, rel_tol=1e-5), (size, views, weight)
    # equal to the view count only at 128 px: at 32 px one view is 15x weaker than at 128 px, 16 views 8.4x weaker
    # than counting 16 "views" (60 * (1 - e^-1.6) = 47.93)
    assert HAND[(128, 1)] / HAND[(32, 1)] > 15
    assert math.isclose(60 * (1 - math.exp(-1.6)) / HAND[(32, 16)], 8.39, rel_tol=1e-2)


def test_rendering_loss_is_mse_times_the_weight():
    model = tiny_model()
    rgb = torch.zeros(2, 5, 3)
    target = torch.full((2, 5, 3), 0.5)
    loss = model.rendering_loss(rgb, target, torch.tensor([32 * 32, 2 * 128 * 128]))
    torch.testing.assert_close(loss, torch.tensor([0.25 * HAND[(32, 1)], 0.25 * HAND[(128, 2)]]), rtol=1e-5, atol=0)


def test_training_batches_count_the_pixels_of_all_views_of_the_object():
    bundle = type("Bundle", (), {"origins": torch.zeros(2 * 4, 3), "directions": torch.ones(2 * 4, 3)})()
    batch = {"object_indices": torch.tensor([0, 1]), "image": torch.zeros(8, 3),
             "num_views": torch.tensor([16.0, 3.0])}
    rays = RayBatch.from_datamanager(bundle, batch, pixels_per_view=32 * 32)
    assert rays.num_pixels.tolist() == [16 * 1024, 3 * 1024]


def test_input_rays_count_the_pixels_of_the_input_views():
    from nerfstudio.cameras.cameras import Cameras

    from ns_diffusion_methods.data.multi_object import ObjectViews
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import input_rays

    c2w = torch.eye(4)[:3][None].repeat(3, 1, 1)
    c2w[:, 2, 3] = 2.6
    cameras = Cameras(camera_to_worlds=c2w, fx=10.0, fy=10.0, cx=6.0, cy=4.0, width=12, height=8)
    obj = ObjectViews(0, "a", cameras, torch.rand(3, 8, 12, 3), torch.arange(3), input_views=[0, 2])
    rays = input_rays([obj], torch.Generator().manual_seed(0))
    assert rays.num_pixels.tolist() == [2 * 8 * 12] and rays.num_rays == 2 * 8 * 12


def guided_x0_by_hand(model, rays: InputRays, noise: torch.Tensor, gain: float, seed: int) -> torch.Tensor:
    """One guided DDIM step from t = 999 to t = -1 (the result is the guided x0), written out with the official
    formulas: weight 60 (1 - e^(-0.1 n / 128^2)) for the n rays rendered, lambda_gd = gain * 2^14."""
    schedule, omega = model.schedule, model.config.snr_power
    t = torch.full((noise.shape[0],), 999)
    x_in = noise.clone().requires_grad_(True)
    x0 = predict_x0(model.eval_unet, schedule, x_in, t).clamp(-2, 2)
    code = model.image_to_code(x0)
    out = model.render_rays(code, rays.origins, rays.directions, decoder=model.eval_decoder, perturb=True,
                            generator=torch.Generator().manual_seed(seed))
    n = rays.origins.shape[1]
    weight = 60 * (1 - math.exp(-0.1 * n / 128**2))
    mse = (out["rgb"] - rays.target).square().flatten(1).mean(dim=1)
    loss = (mse * weight + 3e-3 * code.square().flatten(1).mean(dim=1)).sum()
    (grad,) = torch.autograd.grad(loss, [x_in])
    alpha, sigma = schedule.alpha_sigma(t, 4)
    return (x0.detach() - grad * sigma ** (2 - 2 * omega) * alpha ** (2 * omega - 1) * gain * 2**14).clamp(-2, 2)


def test_guidance_matches_the_official_formula_and_ignores_the_number_of_input_views():
    model = tiny_model()
    noise = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    one_view = image_rays(2, 64, seed=2, num_pixels=32 * 32)
    two_views = InputRays(one_view.origins, one_view.directions, one_view.target,
                          torch.full((2,), 2.0 * 32 * 32), one_view.order)
    gain = 3.2
    expected = guided_x0_by_hand(model, one_view, noise, gain, seed=7)
    unguided = guided_sample(model, None, 1, 0.0, 64, num_objects=2, noise=noise)
    assert (expected - model.code_to_image(unguided)).abs().max() > 1e-4  # the guidance does move x0
    for rays in (one_view, two_views):  # official: weight from the rays rendered, not from the input views
        sample = guided_sample(model, rays, 1, gain, 64, noise=noise, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(model.code_to_image(sample), expected, rtol=1e-4, atol=1e-5)


def test_finetuning_weight_counts_the_input_views_pixels():
    """Fine-tuning (official inverse_code: scale_num_ray = input pixels) does depend on the number of input views."""
    model = tiny_model()
    code = model.activate(model.codes_pre[:2]).detach()
    rays_1 = image_rays(2, 32, seed=3, num_pixels=32 * 32)
    rays_2 = InputRays(rays_1.origins, rays_1.directions, rays_1.target, torch.full((2,), 2.0 * 32 * 32),
                       rays_1.order)
    results = [finetune(model, code, rays, 1, 2, 5e-2, prior_weight=0.0, rays_per_step=32,
                        generator=torch.Generator().manual_seed(0)) for rays in (rays_1, rays_2, rays_1)]
    assert torch.equal(results[0], results[2])  # deterministic
    assert not torch.allclose(results[0], results[1])


def test_ddim_timesteps_are_the_official_ones():
    schedule = GaussianSchedule()
    steps_75 = schedule.ddim_timesteps(75)
    assert len(steps_75) == 75 and steps_75[:4] == [999, 985, 972, 959] and steps_75[-2:] == [25, 12]
    assert schedule.ddim_timesteps(50)[:3] == [999, 979, 959] and schedule.ddim_timesteps(50)[-1] == 19
    assert schedule.ddim_timesteps(3) == [999, 665, 332]


def test_langevin_steps_follow_each_ddim_step_at_the_new_noise_level():
    model = tiny_model()
    seen = []
    model.unet_ema.register_forward_hook(lambda module, args, out: seen.append(int(args[1][0])))
    noise = torch.randn(1, 6, 8, 8, generator=torch.Generator().manual_seed(0))
    guided_sample(model, None, 3, 0.0, 16, num_objects=1, noise=noise, langevin_steps=2)
    # DDIM 999 -> 665, 2 Langevin steps at 665; 665 -> 332, 2 at 332; 332 -> -1 (t_prev = -1: none)
    assert seen == [999, 665, 665, 665, 332, 332, 332]
    seen.clear()
    guided_sample(model, None, 3, 0.0, 16, num_objects=1, noise=noise, langevin_steps=1, langevin_t_range=(400, 1000))
    assert seen == [999, 665, 665, 332]


def test_saturated_codes_move_only_with_a_margin():
    """A guided sample clipped to +-2 sits where 2 tanh has no gradient; with the official plain atanh (here 1e-6)
    those elements cannot move in fine-tuning, with a margin of a few percent they can."""
    model = tiny_model()
    assert math.isclose(float(model.inverse_activate(torch.tensor([2.0]), margin=0.05)), math.atanh(0.95),
                        rel_tol=1e-6)
    code = torch.full((1, *model.code_shape), 2.0)
    code[..., ::2] = -2.0
    assert float(model.saturated_fraction(code)) == 1.0
    rays = image_rays(1, 64, seed=4, num_pixels=32 * 32)
    stuck = finetune(model, code, rays, 3, 4, 5e-2, prior_weight=0.0, rays_per_step=64, init_margin=1e-6,
                     generator=torch.Generator().manual_seed(0))
    moved = finetune(model, code, rays, 3, 4, 5e-2, prior_weight=0.0, rays_per_step=64, init_margin=0.05,
                     generator=torch.Generator().manual_seed(0))
    assert float(model.saturated_fraction(stuck)) == 1.0
    assert (moved - code.clamp(-1.9, 1.9)).abs().max() > 0.05


def test_intervals_and_generation_proxy_by_hand():
    mean, std, half = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and math.isclose(std, math.sqrt(5 / 3)) and math.isclose(half, 3.182 * std / 2)
    import numpy as np

    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert math.isclose(frechet_distance(a, a + 3.0), 18.0, abs_tol=1e-9)  # |mu shift|^2, equal covariances
    white = torch.ones(2, 4, 4, 3)
    red = white.clone()
    red[:, :2, :, :] = torch.tensor([1.0, 0.0, 0.0])  # half the pixels
    proxy = image_statistics_distance(red, white)
    assert proxy["sample_coverage"] == 0.5 and proxy["data_coverage"] == 0.0 and proxy["coverage_gap"] == 0.5
