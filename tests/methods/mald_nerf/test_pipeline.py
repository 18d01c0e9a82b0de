"""The pipeline step: what the discriminator sees, R1 against autograd, gradient isolation, and the dataset update."""

import torch

from .conftest import TINY_LDM, build_pipeline


def _same_batch_twice(pipeline, step):
    """The batch that get_train_loss_dict(step) will draw (the sampler's state is rewound afterwards)."""
    dm = pipeline.datamanager
    state = dm.generator.get_state()
    _, batch = dm.next_train(step)
    dm.generator.set_state(state)
    return batch


def _record_discriminator_inputs(pipeline):
    inputs = []
    handle = pipeline.discriminator.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    return inputs, handle


def _patches(values, batch):
    size, offset, count = batch["patch_size"], batch["num_single_rays"], batch["patch_corners"].shape[0]
    return values[offset:].reshape(count, size, size, -1).permute(0, 3, 1, 2).float()


def test_discriminator_sees_black_outside_the_mask_real_and_fake(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture, ["--pipeline.r1-every", "1000"])
    pipeline.maybe_update_dataset(0)  # the first inpainting fills the real images
    batch = _same_batch_twice(pipeline, 1)
    inputs, handle = _record_discriminator_inputs(pipeline)
    outputs, losses, _ = pipeline.get_train_loss_dict(1)
    handle.remove()
    mask = _patches(batch["object_mask"], batch).bool()  # [K, 1, P, P]
    assert mask.any() and (~mask).any()  # the patches straddle the hole
    real = _patches(batch["inpainted"], batch)
    fake = _patches(outputs["rgb"].detach(), batch)
    assert len(inputs) == 3  # fake (NeRF side), real and fake (discriminator side)
    for x in inputs:
        assert torch.equal(x[~mask.expand_as(x)], torch.zeros_like(x[~mask.expand_as(x)]))  # black outside
    expected_real = torch.where(mask, real, torch.zeros(()))
    expected_fake = torch.where(mask, fake, torch.zeros(()))
    assert sum(torch.allclose(x, expected_real) for x in inputs) == 1
    assert sum(torch.allclose(x, expected_fake) for x in inputs) == 2
    assert real[mask.expand_as(real)].abs().sum() > 0  # the inside is not blacked out
    assert {"adversarial_loss", "feature_matching_loss", "discriminator_loss"} <= set(losses)
    assert "pixel_loss" in losses and "hash_decay_loss" in losses


def test_unmasked_ablation_shows_whole_patches(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture, ["--pipeline.mask-discriminator-input", "False"])
    pipeline.maybe_update_dataset(0)
    batch = _same_batch_twice(pipeline, 1)
    inputs, handle = _record_discriminator_inputs(pipeline)
    pipeline.get_train_loss_dict(1)
    handle.remove()
    assert any(torch.allclose(x, _patches(batch["inpainted"], batch)) for x in inputs)


def test_lazy_r1_matches_autograd_and_trains_only_the_discriminator(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture, ["--pipeline.r1-every", "4", "--pipeline.r1-gamma", "10"])
    pipeline.maybe_update_dataset(0)
    assert "r1_loss" not in pipeline.get_train_loss_dict(3)[1]  # only every 4th step
    batch = _same_batch_twice(pipeline, 4)
    _, losses, _ = pipeline.get_train_loss_dict(4)
    mask = _patches(batch["object_mask"], batch).bool()
    real = torch.where(mask, _patches(batch["inpainted"], batch), torch.zeros(())).requires_grad_(True)
    logits, _ = pipeline.discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real)
    expected = 10 / 2 * 4 * grad.pow(2).sum(dim=(1, 2, 3)).mean()  # gamma / 2 * interval * E ||dD/dx||^2
    torch.testing.assert_close(losses["r1_loss"], expected, rtol=1e-4, atol=1e-6)
    disc_params = list(pipeline.discriminator.parameters())
    nerf_params = [p for group in pipeline.model.get_param_groups().values() for p in group]
    d_grads = torch.autograd.grad(losses["r1_loss"], disc_params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in d_grads)
    n_grads = torch.autograd.grad(losses["r1_loss"], nerf_params, allow_unused=True)
    assert all(g is None for g in n_grads)


def test_each_player_only_gets_its_own_gradient(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture)
    pipeline.maybe_update_dataset(0)
    _, losses, _ = pipeline.get_train_loss_dict(1)
    disc_params = list(pipeline.discriminator.parameters())
    nerf_params = [p for group in pipeline.model.get_param_groups().values() for p in group]

    def grads(loss, params):
        return [g for g in torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) if g is not None]

    generator_terms = losses["adversarial_loss"] + losses["feature_matching_loss"]
    assert grads(generator_terms, disc_params) == []
    assert any(g.abs().sum() > 0 for g in grads(generator_terms, nerf_params))
    assert grads(losses["discriminator_loss"], nerf_params) == []
    assert any(g.abs().sum() > 0 for g in grads(losses["discriminator_loss"], disc_params))
    assert set(pipeline.get_param_groups()) >= {"fields", "proposal_networks", "discriminator"}


def _quantised(image):
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def test_dataset_update_never_changes_pixels_outside_the_mask(object_removal_capture, tmp_path):
    pipeline = build_pipeline(object_removal_capture, [
        "--pipeline.update-every", "5", "--pipeline.num-updates", "1",
        *TINY_LDM, "--pipeline.inpainter.customization-cache-dir", str(tmp_path / "lora")])
    dm = pipeline.datamanager
    assert pipeline.config.inpainter.lora_path is None and not dm.inpainted.filled.any()  # nothing before training
    pipeline.start_training(0, 20)  # customisation (2 steps) and the first inpainting
    assert pipeline.config.inpainter.lora_path is not None
    for step in (0, 5, 10):  # the first inpainting (done at the start), then updates k = 0 and k = 1
        assert pipeline.maybe_update_dataset(step) is (step > 0)
        assert dm.inpainted.last_step.tolist() == [step] * dm.num_train_images
        for index in range(dm.num_train_images):
            stored = dm.inpainted.images[index]
            captured = _quantised(dm.captured_image(index))
            outside = ~dm.object_mask(index)
            assert torch.equal(stored[outside], captured[outside])
        # the tiny (random-weight) LDM does change the inside
        inside = dm.object_mask(0)
        assert not torch.equal(dm.inpainted.images[0][inside], _quantised(dm.captured_image(0))[inside])
    assert pipeline.start_timestep(None) is None  # first inpainting: pure noise
    T = pipeline.inpainter.num_train_timesteps
    assert pipeline.start_timestep(0) == round(0.98 * T)  # the first update starts at t_max
    assert pipeline.start_timestep(1) == round(0.3 * T)  # the last (k = K) at t_min
    assert pipeline.maybe_update_dataset(15) is False  # past the K + 1 updates: nothing more
    assert dm.inpainted.last_step.tolist() == [10] * dm.num_train_images
    assert pipeline.maybe_update_dataset(7) is False  # not a multiple of U
    assert dm.inpainted.updates.tolist() == [3] * dm.num_train_images


def test_no_dataset_update_ablation_keeps_the_first_inpainting(object_removal_capture):
    for flags in (["--pipeline.dataset-update", "False", *TINY_LDM, "--pipeline.inpainter.customize", "False"],
                  ["pipeline.inpainter:opencv"]):
        # the ablation, and a classical inpainter (it ignores renders: an update would repeat the first inpainting)
        pipeline = build_pipeline(object_removal_capture, ["--pipeline.update-every", "5", *flags])
        pipeline.maybe_update_dataset(0)
        pipeline.maybe_update_dataset(5)
        assert pipeline.datamanager.inpainted.updates.tolist() == [1] * pipeline.datamanager.num_train_images


def test_evaluation_and_inference_do_not_build_the_inpainter(object_removal_capture):
    pipeline = build_pipeline(object_removal_capture, TINY_LDM, test_mode="test")
    assert "inpainter" not in pipeline._training_only
    keys = pipeline.state_dict().keys()
    assert "datamanager.inpainted.images" in keys and not any("unet" in k or "vae" in k for k in keys)
