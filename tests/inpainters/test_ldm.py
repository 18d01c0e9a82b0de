"""The diffusers inpainting LDM backend, run with tiny random-weight models (same code path as SD-2-inpainting)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ns_diffusion_methods.errors import ModelUnavailableError, UserFacingError
from ns_diffusion_methods.inpainters import LDMInpainterConfig
from ns_diffusion_methods.inpainters.ldm import LatentInpainter, partial_timesteps
from ns_diffusion_methods.inpainters.tiny import write_tiny_inpainting_model

STEPS = 5


def _config(**kwargs):
    return LDMInpainterConfig(**{"model": "tiny", "resolution": 32, "num_inference_steps": STEPS, **kwargs})


@pytest.fixture(scope="module")
def tiny_inpainter():
    return _config().setup(device="cpu")


def _inputs(batch=2, height=24, width=32):
    torch.manual_seed(1)
    images = torch.rand(batch, 3, height, width)
    masks = torch.zeros(batch, 1, height, width, dtype=torch.bool)
    masks[:, :, 6:18, 8:20] = True
    return images, masks


def _record_unet_calls(inpainter):
    """Record (sample, timestep) of every UNet call through a forward pre-hook."""
    calls = []

    def hook(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        calls.append((sample.detach().clone(), int(timestep)))

    return calls, inpainter.unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_partial_timesteps_keeps_grid_steps_at_or_below_t():
    grid = torch.tensor([801, 601, 401, 201, 1])
    assert partial_timesteps(grid, None).tolist() == [801, 601, 401, 201, 1]
    assert partial_timesteps(grid, 601).tolist() == [601, 401, 201, 1]
    assert partial_timesteps(grid, 500).tolist() == [401, 201, 1]
    assert partial_timesteps(grid, 0).tolist() == [1]  # below the grid: one step at the smallest timestep


def test_full_inpainting_keeps_outside_and_is_seeded(tiny_inpainter):
    images, masks = _inputs()
    out = tiny_inpainter.inpaint(images, masks, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    outside = ~masks.expand_as(images)
    assert torch.equal(out[outside], images[outside])
    assert not torch.allclose(out[~outside], images[~outside])
    again = tiny_inpainter.inpaint(images, masks, generator=torch.Generator().manual_seed(0))
    other = tiny_inpainter.inpaint(images, masks, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_full_inpainting_runs_every_ddim_step_with_9_channel_conditioning(tiny_inpainter):
    images, masks = _inputs(batch=1)
    calls, handle = _record_unet_calls(tiny_inpainter)
    try:
        tiny_inpainter.inpaint(images, masks)
    finally:
        handle.remove()
    scheduler = tiny_inpainter.scheduler
    assert [t for _, t in calls] == scheduler.timesteps.tolist() and len(calls) == STEPS
    sample = calls[0][0]
    # guidance (7.5 > 1) doubles the batch; 4 latent + 1 mask + 4 masked-image latent channels
    assert sample.shape[:2] == (2, 9)
    size = tiny_inpainter.inference_size(24, 32)
    assert sample.shape[-2:] == (size[0] // 8, size[1] // 8)
    hole = F.interpolate(masks.float(), size=size, mode="area") > 1e-3
    expected_mask = F.interpolate(hole.float(), size=sample.shape[-2:], mode="nearest")
    assert torch.equal(sample[:1, 4:5], expected_mask)
    pixels = F.interpolate(images, size=size, mode="bilinear", antialias=True) * 2 - 1
    expected_masked = tiny_inpainter.encode_images(pixels * (~hole).float())
    assert torch.allclose(sample[:1, 5:], expected_masked, atol=1e-5)


def test_partial_ddim_starts_from_noised_source_and_keeps_steps_below_t(tiny_inpainter):
    images, masks = _inputs(batch=1)
    source = torch.rand_like(images)
    start = 500
    calls, handle = _record_unet_calls(tiny_inpainter)
    try:
        out = tiny_inpainter.inpaint(images, masks, start_timestep=start, source=source,
                                     generator=torch.Generator().manual_seed(3))
    finally:
        handle.remove()
    grid = tiny_inpainter.scheduler.timesteps
    kept = [t for t in grid.tolist() if t <= start]
    assert [t for _, t in calls] == kept and 0 < len(kept) < STEPS
    # the first UNet input's latents = add_noise(VAE(source), noise, first kept step), noise from the same seed
    from diffusers.utils.torch_utils import randn_tensor

    size = tiny_inpainter.inference_size(24, 32)
    source_latents = tiny_inpainter.encode_images(F.interpolate(source, size=size, mode="bilinear",
                                                                antialias=True) * 2 - 1)
    noise = randn_tensor(source_latents.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    expected = tiny_inpainter.scheduler.add_noise(source_latents, noise, torch.tensor([kept[0]]))
    assert torch.allclose(calls[0][0][0, :4], expected[0], atol=1e-5)
    outside = ~masks.expand_as(images)
    assert torch.equal(out[outside], images[outside])


def test_guidance_off_uses_single_pass_and_prompt_embeddings_are_cached():
    inpainter = _config(guidance_scale=1.0).setup(device="cpu")
    images, masks = _inputs(batch=1)
    encoder_calls = []
    handle_text = inpainter.text_encoder.register_forward_hook(lambda *a: encoder_calls.append(1))
    calls, handle = _record_unet_calls(inpainter)
    try:
        inpainter.inpaint(images, masks)
        inpainter.inpaint(images, masks)
    finally:
        handle.remove()
        handle_text.remove()
    assert all(sample.shape[0] == 1 for sample, _ in calls)
    assert len(encoder_calls) == 1  # the prompt was encoded once, then reused


def test_batches_are_chunked_consistently():
    images, masks = _inputs(batch=3)
    one = _config(batch_size=1).setup(device="cpu")
    three = _config(batch_size=3).setup(device="cpu")
    source = torch.rand_like(images)
    a = one.inpaint(images, masks, start_timestep=300, source=source, generator=torch.Generator().manual_seed(0))
    b = three.inpaint(images, masks, start_timestep=300, source=source, generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape == images.shape
    outside = ~masks.expand_as(images)
    assert torch.equal(a[outside], b[outside])


def test_default_resolution_is_the_native_size_of_the_model():
    inpainter = LDMInpainterConfig(model="tiny").setup(device="cpu")
    unet, factor = inpainter.unet.config, inpainter.vae_scale_factor
    assert inpainter.resolution == unet.sample_size * factor == 64
    # short side 72 -> 64; long side 96 * 64 / 72 = 85.3 -> nearest multiple of 8: 88
    assert inpainter.inference_size(72, 96) == (64, 88)


def test_inference_size_keeps_frames_below_the_resolution(tiny_inpainter):
    assert tiny_inpainter.size_multiple == tiny_inpainter.vae_scale_factor == 8
    assert tiny_inpainter.inference_size(24, 32) == (24, 32)  # short side 24 < 32: the frame's own size
    assert _config(resolution=64).setup().inference_size(48, 32) == (48, 32)


def test_loads_from_a_local_folder_and_refuses_incomplete_or_non_inpainting_models(tmp_path, tiny_inpainter):
    folder = write_tiny_inpainting_model(tmp_path / "tiny-inpaint")
    loaded = _config(model=str(folder)).setup(device="cpu")
    assert isinstance(loaded, LatentInpainter) and loaded.num_train_timesteps == 1000
    images, masks = _inputs(batch=1)
    expected = tiny_inpainter.inpaint(images, masks, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loaded.inpaint(images, masks, generator=torch.Generator().manual_seed(0)), expected,
                          atol=1e-5)

    (folder / "unet" / "config.json").rename(folder / "unet" / "config.moved")
    with pytest.raises(ModelUnavailableError, match=r"unet/config.json[\s\S]*--pipeline.inpainter.model"):
        _config(model=str(folder)).setup()
    (folder / "unet" / "config.moved").rename(folder / "unet" / "config.json")

    # a text-to-image UNet (4 input channels) in place of the inpainting one
    from ns_diffusion_methods.diffusion.tiny import tiny_unet

    tiny_unet(in_channels=4, cross_attention_dim=16).save_pretrained(str(folder / "unet"))
    with pytest.raises(UserFacingError, match="takes 4 input channels"):
        _config(model=str(folder)).setup()


def test_unknown_hub_id_names_the_flag():
    with pytest.raises(ModelUnavailableError, match="--pipeline.inpainter.model"):
        _config(model="no-such-owner/no-such-inpainting-model").setup()
