"""SSDNeRF's single-stage step (prior gradient caching) and per-object code optimisers, on a tiny model."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.methods.ssdnerf.diffusion import CodeUNetConfig
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModelConfig
from ns_diffusion_methods.methods.ssdnerf.training import RayBatch, inner_steps_at, single_stage_step
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

NUM_OBJECTS = 5


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    config = SSDNeRFModelConfig(
        code_channels=2, code_resolution=8, code_init_scale=0.5,  # codes far from 0, so every term matters
        renderer=BoxVolumeRendererConfig(num_samples=8, num_importance_samples=0),
        unet=CodeUNetConfig(block_out_channels=(16, 32), layers_per_block=1, attention_resolutions=(4,),
                            attention_head_dim=8, dropout=0.0, norm_num_groups=8),
    )
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=box, num_train_data=10, metadata={"num_objects": NUM_OBJECTS})


def random_rays(num_objects: int, num_rays: int, seed: int) -> RayBatch:
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(num_objects, num_rays, 3, generator=g), dim=-1)
    origins = -2.5 * directions + 0.3 * torch.randn(num_objects, num_rays, 3, generator=g)
    target = torch.rand(num_objects, num_rays, 3, generator=g)
    return RayBatch(origins, directions, target, torch.full((num_objects,), 6.0))


def test_prior_gradient_caching_equals_joint_gradient_for_one_inner_step():
    """K_in = 1: caching the diffusion gradient, then adding the rendering gradient, gives the same code update as
    back-propagating diffusion + rendering + regulariser together (and the same decoder and U-Net updates)."""
    objects = torch.tensor([3, 0, 4])
    rays = random_rays(3, 40, seed=1)
    t = torch.tensor([10, 500, 900])
    noise = torch.randn(3, 6, 8, 8, generator=torch.Generator().manual_seed(2))

    cached = tiny_model()
    joint = copy.deepcopy(cached)
    cached_opts = [torch.optim.Adam(cached.unet.parameters(), lr=1e-3), torch.optim.Adam(cached.decoder.parameters(),
                                                                                          lr=1e-3)]
    single_stage_step(cached, objects, lambda k: rays, k_in=1, code_lr=1e-2, diffusion_optimizer=cached_opts[0],
                      decoder_optimizer=cached_opts[1], timesteps=t, noise=noise, perturb=False)

    # the same step with one joint backward and torch.optim.Adam on each object's code
    code_params = [torch.nn.Parameter(joint.codes_pre[i].clone()) for i in objects.tolist()]
    codes_pre = torch.stack(code_params)
    code = joint.activate(codes_pre)
    loss = joint.diffusion_loss(code, t=t, noise=noise, update_norm=True).mean()
    out = joint.render_rays(code, rays.origins, rays.directions, perturb=False)
    loss = loss + joint.rendering_loss(out["rgb"], rays.target, rays.num_pixels).mean()
    loss = loss + joint.code_reg_loss(code).mean()
    joint_opts = [torch.optim.Adam(joint.unet.parameters(), lr=1e-3), torch.optim.Adam(joint.decoder.parameters(),
                                                                                        lr=1e-3)]
    code_opts = [torch.optim.Adam([p], lr=1e-2) for p in code_params]
    loss.backward()
    for opt in joint_opts + code_opts:
        opt.step()

    for i, obj in enumerate(objects.tolist()):
        assert torch.allclose(cached.codes_pre[obj], code_params[i].detach(), atol=1e-6, rtol=0)
    assert not torch.allclose(cached.codes_pre[objects], joint.codes_pre[objects])  # the codes did move
    untouched = [1, 2]
    assert torch.equal(cached.codes_pre[untouched], joint.codes_pre[untouched])
    for a, b in zip(cached.decoder.parameters(), joint.decoder.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    for a, b in zip(cached.unet.parameters(), joint.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)


def test_prior_gradient_is_computed_once_and_reused_by_every_inner_step():
    model = tiny_model()
    calls = []
    model.unet.register_forward_hook(lambda *args: calls.append(1))
    decoder_before = [p.clone() for p in model.decoder.parameters()]
    steps_before = model.code_steps.clone()
    decoder_opt = torch.optim.SGD(model.decoder.parameters(), lr=0.1)
    losses, metrics = single_stage_step(model, torch.tensor([1, 2]), lambda k: random_rays(2, 16, seed=k), k_in=3,
                                        code_lr=1e-2, diffusion_optimizer=None, decoder_optimizer=decoder_opt)
    assert len(calls) == 1  # one U-Net pass per outer iteration
    assert model.code_steps.tolist() == (steps_before + torch.tensor([0, 3, 3, 0, 0])).tolist()
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.decoder.parameters()))
    assert set(losses) == {"diffusion_loss", "rendering_loss", "code_reg_loss"}
    assert float(metrics["k_in"]) == 3


def test_inner_step_schedule():
    assert [inner_steps_at(s, (16, 4), (2000,)) for s in (0, 1999, 2000)] == [16, 16, 4]
    assert inner_steps_at(150_000, (16, 4, 2), (2000, 100_000)) == 2
    with pytest.raises(ValueError):
        inner_steps_at(0, (16, 4), ())


def test_each_object_keeps_its_own_adam_state():
    """Objects visited at different times follow torch.optim.Adam run on each object alone."""
    model = tiny_model()
    references = {i: torch.nn.Parameter(model.codes_pre[i].clone()) for i in range(NUM_OBJECTS)}
    optimizers = {i: torch.optim.Adam([p], lr=0.05) for i, p in references.items()}
    g = torch.Generator().manual_seed(3)
    for visit in ([0, 1], [1], [1, 3], [0, 3, 4], [1]):
        grads = torch.randn(len(visit), *model.code_shape, generator=g)
        model.code_adam_step(torch.tensor(visit), grads, lr=0.05)
        for obj, grad in zip(visit, grads):
            references[obj].grad = grad.clone()
            optimizers[obj].step()
    for i in range(NUM_OBJECTS):
        assert torch.allclose(model.codes_pre[i], references[i].detach(), atol=1e-6, rtol=0)
    assert model.code_steps.tolist() == [2, 4, 0, 2, 1]


def test_per_object_optimizer_state_survives_a_checkpoint_round_trip():
    model = tiny_model()
    g = torch.Generator().manual_seed(4)
    for visit in ([0, 2], [2, 3], [2]):
        model.code_adam_step(torch.tensor(visit), torch.randn(len(visit), *model.code_shape, generator=g), lr=0.05)
    buffer = io.BytesIO()
    torch.save({"pipeline": model.state_dict()}, buffer)  # what nerfstudio's checkpoint holds
    buffer.seek(0)
    restored = tiny_model(seed=1)  # different initial codes and weights
    restored.load_state_dict(torch.load(buffer)["pipeline"])
    for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps", "diffusion_norm"):
        assert torch.equal(getattr(model, name), getattr(restored, name)), name
    # both continue identically (the bias correction continues from each object's step count)
    grad = torch.randn(2, *model.code_shape, generator=g)
    model.code_adam_step(torch.tensor([2, 4]), grad, lr=0.05)
    restored.code_adam_step(torch.tensor([2, 4]), grad, lr=0.05)
    assert torch.equal(model.codes_pre, restored.codes_pre)


def test_ema_of_decoder_and_unet_follows_the_stylegan_schedule():
    """The EMA copies move by the StyleGAN decay: step 9 of batch 16 -> half-life 8 samples -> decay 0.25."""
    model = tiny_model()
    with torch.no_grad():
        for module in (model.decoder, model.unet):
            for p in module.parameters():
                p.add_(1.0)
    ema_before = [p.detach().clone() for p in model.decoder_ema.parameters()]
    assert model.update_ema(step=9, batch_size=16) == 0.25
    for before, live, ema in zip(ema_before, model.decoder.parameters(), model.decoder_ema.parameters()):
        torch.testing.assert_close(ema, 0.25 * before + 0.75 * live.detach())
    unet_live = next(iter(model.unet.parameters())).detach()
    unet_ema = next(iter(model.unet_ema.parameters()))
    torch.testing.assert_close(unet_ema, 0.25 * (unet_live - 1.0) + 0.75 * unet_live)


def test_per_object_buffers_are_made_on_the_runs_device():
    """The codes and their optimiser moments are allocated where the run trains (nerfstudio passes ``device`` to the
    model), never in host memory first: on the meta device nothing is allocated at all."""
    config = tiny_model().config
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    model = config.setup(scene_box=box, num_train_data=10, metadata={"num_objects": NUM_OBJECTS}, device="meta")
    for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps"):
        buffer = getattr(model, name)
        assert buffer.device.type == "meta" and buffer.shape[0] == NUM_OBJECTS
    torch.manual_seed(0)
    cpu = config.setup(scene_box=box, num_train_data=10, metadata={"num_objects": NUM_OBJECTS})
    torch.manual_seed(0)
    expected = (torch.rand(cpu.codes_pre.shape) * 2 - 1) * config.code_init_scale
    assert cpu.codes_pre.device.type == "cpu" and torch.allclose(cpu.codes_pre, expected)
