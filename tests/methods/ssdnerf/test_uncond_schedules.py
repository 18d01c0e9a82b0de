"""The unconditional-generation schedules of SSDNeRF (``ssdnerf-uncond``, ``ssdnerf-uncond-small``): the code learning
rate, the loss weights and the decoder / U-Net learning rates at known steps on the code paths training uses, the
preset against the paper's table (``ssdnerf_cars_uncond``), and a short ``ns-train ssdnerf-uncond-small`` in which
every schedule takes effect."""

from __future__ import annotations

import copy
import math

import harness
import pytest
import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from test_ssdnerf_end_to_end import TINY_FLAGS
from test_ssdnerf_training import random_rays, tiny_model

from ns_diffusion_methods.engine.schedulers import WarmupStepSchedulerConfig
from ns_diffusion_methods.methods.ssdnerf.config import (
    ssdnerf_config,
    ssdnerf_small_config,
    ssdnerf_uncond_config,
    ssdnerf_uncond_small_config,
)
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel
from ns_diffusion_methods.methods.ssdnerf.pipeline import SSDNeRFPipeline
from ns_diffusion_methods.methods.ssdnerf.training import single_stage_step


def _optimizers(trainer_config) -> Optimizers:
    """nerfstudio's optimizers and schedulers of a preset, on one parameter per group."""
    params = {name: [torch.nn.Parameter(torch.zeros(1))] for name in ("decoder", "diffusion")}
    return Optimizers(copy.deepcopy(trainer_config.optimizers), params)


def _lr_at(optimizers: Optimizers, group: str, step: int) -> float:
    """The learning rate the scheduler gives the optimiser for iteration ``step`` (LambdaLR's own update, moved to
    ``step`` instead of stepping through every iteration before it)."""
    scheduler = optimizers.schedulers[group]
    scheduler.last_epoch = step - 1
    scheduler.step()
    return optimizers.optimizers[group].param_groups[0]["lr"]


# linear warm-up from 0.1 % over 500 iterations, x0.5 at 500k (official lr_config: warmup_ratio 0.001, step [500000]):
#   step 0:        lr x 0.001
#   step 250:      lr x (0.001 + 0.999 x 250 / 500) = lr x 0.5005
#   step 500:      lr;  step 499 999: lr;  step 500 000: lr x 0.5
HAND_LR = {
    "decoder": {0: 1e-6, 250: 5.005e-4, 500: 1e-3, 499_999: 1e-3, 500_000: 5e-4},
    "diffusion": {0: 1e-7, 250: 5.005e-5, 500: 1e-4, 499_999: 1e-4, 500_000: 5e-5},
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # LambdaLR: "step() before optimizer.step()"
def test_decoder_and_diffusion_learning_rates_at_known_steps():
    optimizers = _optimizers(ssdnerf_uncond_config())
    for group, expected in HAND_LR.items():
        for step, lr in expected.items():
            assert math.isclose(_lr_at(optimizers, group, step), lr, rel_tol=1e-12), (group, step)
    # stepping the scheduler one iteration at a time, as the trainer does, gives the same rates
    stepped = _optimizers(ssdnerf_uncond_config())
    for step in range(4):
        assert math.isclose(stepped.optimizers["decoder"].param_groups[0]["lr"], 1e-3 * (1e-3 + 0.999 * step / 500),
                            rel_tol=1e-12)
        stepped.scheduler_step_all(step)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_reconstruction_presets_keep_their_learning_rates():
    """``ssdnerf`` and ``ssdnerf-small`` never halve, and give the rates of the former warm-up scheduler (nerfstudio's
    ExponentialDecayScheduler with lr_pre_warmup = 0.1 % and lr_final = lr) to rounding."""
    for preset, warmup in ((ssdnerf_config(), 500), (ssdnerf_small_config(), 100)):
        former = copy.deepcopy(preset)
        for group in former.optimizers.values():
            lr = group["optimizer"].lr
            group["scheduler"] = ExponentialDecaySchedulerConfig(lr_pre_warmup=lr * 1e-3, warmup_steps=warmup,
                                                                 ramp="linear", lr_final=lr)
        new, old = _optimizers(preset), _optimizers(former)
        for group in ("decoder", "diffusion"):
            assert isinstance(preset.optimizers[group]["scheduler"], WarmupStepSchedulerConfig)
            assert preset.optimizers[group]["scheduler"].milestones == ()
            for step in (0, 1, warmup // 2, warmup - 1, warmup, 80_000, 500_000, 2_000_000):
                assert math.isclose(_lr_at(new, group, step), _lr_at(old, group, step), rel_tol=1e-12), (group, step)
        assert _lr_at(new, "decoder", 500_000) == 1e-3  # the control: no halving


def _step_losses(model: SSDNeRFModel, step, code_lr: float = 1e-2):
    """One outer iteration (K_in = 1, no network optimisers) of a copy of ``model`` at iteration ``step``; fixed rays,
    timesteps and noise. Returns the losses, the metrics and the code change of objects 1 and 3."""
    model = copy.deepcopy(model)
    before = model.codes_pre.clone()
    noise = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(5))
    losses, metrics = single_stage_step(model, torch.tensor([1, 3]), lambda k: random_rays(2, 32, seed=3), k_in=1,
                                        code_lr=code_lr, diffusion_optimizer=None, decoder_optimizer=None,
                                        timesteps=torch.tensor([100, 700]), noise=noise, perturb=False, step=step)
    return losses, metrics, (model.codes_pre - before)[[1, 3]]


def test_pixel_and_regulariser_weights_halve_at_the_milestone():
    uncond = ssdnerf_uncond_config().pipeline.model
    model = tiny_model()
    model.config.loss_weight_milestones = uncond.loss_weight_milestones
    model.config.loss_weight_gamma = uncond.loss_weight_gamma
    before, before_metrics, _ = _step_losses(model, 499_999)
    after, after_metrics, _ = _step_losses(model, 500_000)
    assert float(after["rendering_loss"]) > 0 and float(after["code_reg_loss"]) > 0
    assert float(after["rendering_loss"]) / float(before["rendering_loss"]) == 0.5
    assert float(after["code_reg_loss"]) / float(before["code_reg_loss"]) == 0.5
    assert torch.equal(after["diffusion_loss"], before["diffusion_loss"])  # the prior's weight is not scheduled
    assert (float(before_metrics["loss_weight_scale"]), float(after_metrics["loss_weight_scale"])) == (1.0, 0.5)
    # the weights themselves: 20 -> 10 (x 3 x (1 - e^(-0.1 N_v)), N_v = 6 / 128^2 here) and 3e-3 -> 1.5e-3
    n_v = torch.tensor([6.0])
    assert math.isclose(float(model.rendering_weight(n_v, 499_999)), 60 * (1 - math.exp(-0.1 * 6 / 128**2)),
                        rel_tol=1e-12)
    assert math.isclose(float(model.rendering_weight(n_v, 500_000)), 30 * (1 - math.exp(-0.1 * 6 / 128**2)),
                        rel_tol=1e-12)
    code = torch.full((1, 3, 2, 8, 8), 0.5)
    assert math.isclose(float(model.code_reg_loss(code, 500_000)), 1.5e-3 * 0.25, rel_tol=1e-6)
    # test time (no step) and the early step use the configured weights; a model without milestones never halves
    none, _, _ = _step_losses(model, None)
    assert torch.equal(none["rendering_loss"], before["rendering_loss"])
    unscheduled, _, _ = _step_losses(tiny_model(), 500_000)
    assert torch.equal(unscheduled["rendering_loss"], before["rendering_loss"])
    assert torch.equal(unscheduled["code_reg_loss"], before["code_reg_loss"])


def test_the_per_object_adam_gets_the_halved_code_learning_rate():
    pipeline = ssdnerf_uncond_config().pipeline
    assert (pipeline.code_lr_at(0), pipeline.code_lr_at(499_999), pipeline.code_lr_at(500_000)) == (5e-3, 5e-3, 2.5e-3)
    assert ssdnerf_config().pipeline.code_lr_at(10**6) == 1e-2  # the reconstruction preset: constant
    model = tiny_model()
    deltas = {}
    for step in (499_999, 500_000):
        _, metrics, deltas[step] = _step_losses(model, None, code_lr=pipeline.code_lr_at(step))
        assert math.isclose(float(metrics["code_lr"]), pipeline.code_lr_at(step), rel_tol=1e-7)  # logged in float32
    # first Adam step of an object: code_pre moves by lr x g / (|g| + eps), i.e. by lr wherever |g| >> eps
    for step, lr in ((499_999, 5e-3), (500_000, 2.5e-3)):
        moved = deltas[step].abs()
        assert math.isclose(float(moved.max()), lr, rel_tol=1e-4)
        assert float(moved.median()) > 0.99 * lr
    assert torch.allclose(deltas[500_000], 0.5 * deltas[499_999], rtol=1e-3, atol=1e-9)


def test_the_uncond_preset_is_the_papers_table():
    config = ssdnerf_uncond_config()
    pipeline, model = config.pipeline, config.pipeline.model
    assert config.max_num_iterations == 1_000_000
    assert model.unet.dropout == 0.0
    assert (pipeline.inner_steps, pipeline.inner_steps_milestones) == ((16, 4, 2), (2000, 100_000))
    assert (pipeline.code_lr, pipeline.code_lr_milestones, pipeline.code_lr_gamma) == (5e-3, (500_000,), 0.5)
    assert model.freeze_norm_after == 100_000
    assert (model.pixel_loss_weight, model.code_reg_weight) == (20.0, 3e-3)
    assert (model.loss_weight_milestones, model.loss_weight_gamma) == ((500_000,), 0.5)
    assert (pipeline.datamanager.objects_per_batch, pipeline.datamanager.rays_per_object) == (16, 4096)
    for group, lr in (("decoder", 1e-3), ("diffusion", 1e-4)):
        assert config.optimizers[group]["optimizer"].lr == lr
        scheduler = config.optimizers[group]["scheduler"]
        assert (scheduler.warmup_steps, scheduler.warmup_ratio, scheduler.milestones, scheduler.gamma) == (
            500, 1e-3, (500_000,), 0.5)
    # everything else as ssdnerf: undo the differences and compare whole configs
    recons = ssdnerf_config()
    config.method_name, config.max_num_iterations = recons.method_name, recons.max_num_iterations
    config.optimizers = recons.optimizers
    model.unet.dropout = recons.pipeline.model.unet.dropout
    model.freeze_norm_after, model.loss_weight_milestones = -1, ()
    pipeline.inner_steps, pipeline.inner_steps_milestones = (16, 4), (2000,)
    pipeline.code_lr, pipeline.code_lr_milestones = 1e-2, ()
    assert config == recons


def test_the_small_uncond_preset_compresses_the_milestones_to_2000_iterations():
    config = ssdnerf_uncond_small_config()
    pipeline, model = config.pipeline, config.pipeline.model
    assert config.max_num_iterations == 2000 and model.unet.dropout == 0.0
    assert (pipeline.inner_steps, pipeline.inner_steps_milestones) == ((16, 4, 2), (100, 200))
    assert model.freeze_norm_after == 200  # 100k / 1M
    assert pipeline.code_lr_milestones == model.loss_weight_milestones == (1000,)  # 500k / 1M
    assert all(config.optimizers[g]["scheduler"].milestones == (1000,) for g in ("decoder", "diffusion"))
    # the sizes and test-time settings are ssdnerf-small's
    small = ssdnerf_small_config()
    config.method_name, config.optimizers = small.method_name, small.optimizers
    model.freeze_norm_after, model.loss_weight_milestones = -1, ()
    pipeline.inner_steps = small.pipeline.inner_steps
    pipeline.inner_steps_milestones = small.pipeline.inner_steps_milestones
    pipeline.code_lr, pipeline.code_lr_milestones = small.pipeline.code_lr, ()
    assert config == small


@pytest.mark.slow
def test_ns_train_uncond_small_applies_every_schedule(objects_dataset, tmp_path, monkeypatch):
    """6 iterations with the milestones moved to small steps: K_in 3 -> 2 at 2 -> 1 at 4; code lr, loss weights and
    decoder / U-Net learning rates halve at 3 (warm-up 2 iterations); the loss normaliser is frozen from 4 on."""
    used = {"code_lr": [], "decoder_lr": [], "diffusion_lr": [], "loss_weight_scale": [], "norm": []}
    adam_step, train_step = SSDNeRFModel.code_adam_step, SSDNeRFPipeline.train_step

    def recording_adam(self, object_indices, grad, lr, *args, **kwargs):
        used["code_lr"].append(lr)
        return adam_step(self, object_indices, grad, lr, *args, **kwargs)

    def recording_step(self, step, optimizers):
        used["decoder_lr"].append(optimizers.optimizers["decoder"].param_groups[0]["lr"])
        used["diffusion_lr"].append(optimizers.optimizers["diffusion"].param_groups[0]["lr"])
        losses, metrics = train_step(self, step, optimizers)
        assert all(math.isfinite(float(v)) for v in losses.values())
        used["loss_weight_scale"].append(float(metrics["loss_weight_scale"]))
        used["norm"].append(float(self.model.diffusion_norm))
        return losses, metrics

    monkeypatch.setattr(SSDNeRFModel, "code_adam_step", recording_adam)
    monkeypatch.setattr(SSDNeRFPipeline, "train_step", recording_step)
    schedule = ["--pipeline.inner-steps", "3", "2", "1", "--pipeline.inner-steps-milestones", "2", "4",
                "--pipeline.code-lr-milestones", "3", "--pipeline.model.loss-weight-milestones", "3",
                "--pipeline.model.freeze-norm-after", "4"]
    for group in ("decoder", "diffusion"):
        schedule += [f"--optimizers.{group}.scheduler.warmup-steps", "2",
                     f"--optimizers.{group}.scheduler.milestones", "3"]
    config = harness.train("ssdnerf-uncond-small", objects_dataset, tmp_path, flags=[*TINY_FLAGS, *schedule],
                           max_num_iterations=6, dataparser=["srn-data"])

    # K_in 3, 3, 2 | 2, 1, 1 code steps: 5e-3 before iteration 3, 2.5e-3 from it on
    assert used["code_lr"] == [5e-3] * 8 + [2.5e-3] * 4
    assert used["loss_weight_scale"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    for key, lr in (("decoder_lr", 1e-3), ("diffusion_lr", 2e-4)):
        expected = [lr * 1e-3, lr * (1e-3 + 0.999 / 2), lr, lr / 2, lr / 2, lr / 2]
        assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(used[key], expected, strict=True)), used[key]
    norms = used["norm"]  # after each iteration: updated at iterations 0-3, then frozen
    assert len(set(norms[:4])) == 4 and norms[3] == norms[4] == norms[5], norms
    state = torch.load(harness.latest_checkpoint(config), map_location="cpu", weights_only=False)
    assert int(state["pipeline"]["_model.code_steps"].sum()) == 4 * 12  # 4 objects per batch x 12 code steps
