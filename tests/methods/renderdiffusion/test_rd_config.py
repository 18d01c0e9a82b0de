"""Both presets are registered, survive config.yml (yaml dump/load) and build their denoiser."""

from __future__ import annotations

import pytest
import torch
import yaml

from ns_diffusion_methods.methods.renderdiffusion.config import renderdiffusion, renderdiffusion_small
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionDenoiser


def test_presets_are_registered_with_nerfstudio():
    from nerfstudio.plugins.registry import discover_methods

    methods, _ = discover_methods()
    assert methods["renderdiffusion"].method_name == "renderdiffusion"
    assert methods["renderdiffusion-small"].method_name == "renderdiffusion-small"


@pytest.mark.parametrize("spec", [renderdiffusion, renderdiffusion_small])
def test_presets_survive_yaml(spec):
    config = spec.config
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded.pipeline.model == config.pipeline.model
    assert loaded.pipeline.datamanager.mode == "images"
    assert set(loaded.optimizers) == {"encoder", "decoder"}


def test_paper_preset_builds_a_256_triplane_from_64_pixel_images():
    model_config = renderdiffusion.config.pipeline.model
    denoiser = RenderDiffusionDenoiser(model_config, image_size=64)
    unet_params = sum(p.numel() for p in denoiser.encoder.parameters())
    assert unet_params > 10_000_000  # an ADM-scale U-Net, not a toy
    assert model_config.diffusion.num_train_timesteps == 1000
    assert model_config.encoder.triplane_resolution == 256 and model_config.encoder.triplane_channels == 32
    with torch.no_grad():
        features = denoiser.encoder.upsample(torch.zeros(1, model_config.encoder.upsample_channels, 64, 64))
    assert features.shape == (1, 96, 256, 256)
