"""The half-precision path of the inpainting LDM and of customisation (dtype 'auto' = float16 on CUDA)."""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.inpainters import LDMInpainterConfig
from ns_diffusion_methods.inpainters.customization import customize
from ns_diffusion_methods.inpainters.ldm import CustomizationConfig


@pytest.mark.cuda
def test_float16_inpainting_and_customization_on_cuda(tmp_path):
    settings = CustomizationConfig(steps=3, batch_size=2)
    config = LDMInpainterConfig(model="tiny", resolution=32, num_inference_steps=4, customization=settings)
    inpainter = config.setup(device="cuda")
    assert inpainter.dtype == torch.float16 and inpainter.unet.dtype == torch.float16
    images = torch.rand(2, 3, 24, 32, device="cuda")
    masks = torch.zeros(2, 1, 24, 32, dtype=torch.bool, device="cuda")
    masks[:, :, 6:18, 8:20] = True
    folder = customize(images, masks, config, tmp_path, inpainter=inpainter)
    for start, source in ((None, None), (400, torch.rand_like(images))):
        out = inpainter.inpaint(images, masks, start_timestep=start, source=source)
        assert out.dtype == images.dtype and torch.isfinite(out).all()
        assert torch.equal(out[~masks.expand_as(out)], images[~masks.expand_as(images)])
    reloaded = LDMInpainterConfig(model="tiny", resolution=32, lora_path=folder).setup(device="cuda")
    assert torch.isfinite(reloaded.inpaint(images, masks)).all()
