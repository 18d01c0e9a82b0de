"""The fixer backends as typed configs: one per backend, an abstract base, the weights each names, yaml round trips
(including ``config.yml`` files of runs made before the backends had configs of their own), the dtype spellings."""

from __future__ import annotations

import pytest
import torch
import yaml

from ns_diffusion_methods.fixers.base import Fixer, FixerConfig
from ns_diffusion_methods.fixers.configs import fixer_configs
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig, resolve_dtype
from ns_diffusion_methods.fixers.identity import IdentityFixer, IdentityFixerConfig
from ns_diffusion_methods.fixers.oracle import OracleFixerConfig


def test_the_base_config_is_abstract_and_each_backend_has_its_own():
    with pytest.raises(TypeError, match="_target"):
        FixerConfig()  # no backend of its own: nothing to build
    assert {name: type(config) for name, config in fixer_configs.items()} == {
        "difix": DifixFixerConfig, "identity": IdentityFixerConfig, "oracle": OracleFixerConfig}
    assert all(issubclass(config._target, Fixer) for config in fixer_configs.values())
    # identity and oracle carry no Difix settings
    for config in (IdentityFixerConfig(), OracleFixerConfig()):
        assert not hasattr(config, "model") and not hasattr(config, "dtype") and not hasattr(config, "chunk_size")


def test_each_backend_names_the_weights_it_loads():
    assert DifixFixerConfig().weights() == "nvidia/difix_ref"
    assert DifixFixerConfig(model="tiny").weights() == "tiny"
    assert IdentityFixerConfig().weights() is None
    assert OracleFixerConfig().weights() is None


@pytest.mark.parametrize("name", sorted(fixer_configs))
def test_every_backend_config_survives_yaml(name):
    config = fixer_configs[name]
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert type(loaded) is type(config) and loaded == config and loaded._target is config._target


def test_identity_builds_without_weights_and_returns_its_input():
    fixer = IdentityFixerConfig().setup(device="cpu", flag="--unused")
    assert isinstance(fixer, IdentityFixer)
    images = torch.rand(2, 3, 8, 8)
    fixed = fixer.fix(images, [None, torch.rand(1, 3, 4, 4)])
    assert torch.equal(fixed, images) and fixed is not images


def test_the_dtype_is_spelled_as_torch_spells_it_and_old_spellings_still_load():
    assert resolve_dtype("float32", "cpu") is torch.float32 and resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("auto", "cpu") is torch.float32 and resolve_dtype("auto", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="auto, float32, float16, bfloat16"):
        resolve_dtype("fp32", "cpu")
    with pytest.warns(DeprecationWarning, match="'bf16' is now spelled 'bfloat16'"):
        assert DifixFixerConfig(dtype="bf16").dtype == "bfloat16"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        DifixFixerConfig(chunk_size=0)


#: the fixer of a difix3d config.yml written before the backends had configs of their own (the base was Difix's)
LEGACY_CONFIG = """\
!!python/object:ns_diffusion_methods.fixers.base.FixerConfig
_target: !!python/name:ns_diffusion_methods.fixers.difix.DifixFixer ''
chunk_size: 3
dtype: bf16
model: nvidia/difix
prompt: remove degradation
resolution: null
seed: 7
timestep: 199
"""


def test_a_config_yml_from_before_the_backend_configs_loads_as_difix():
    from ns_diffusion_methods.fixers.difix.fixer import DifixFixer

    loaded = yaml.load(LEGACY_CONFIG, Loader=yaml.Loader)
    assert type(loaded) is DifixFixerConfig and loaded._target is DifixFixer
    assert loaded == DifixFixerConfig(model="nvidia/difix", dtype="bfloat16", chunk_size=3, seed=7)
    assert loaded.weights() == "nvidia/difix"
