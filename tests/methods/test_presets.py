"""The one preset builder: every method's presets are built the same way, and small presets derive from full ones."""

from __future__ import annotations

import pytest

from ns_diffusion_methods.methods.presets import nerfacto_optimizers, small, trainer_config


def _full():
    from ns_diffusion_methods.methods.mald_nerf.config import mald_nerf_config

    return mald_nerf_config


def test_small_copies_and_changes_only_the_named_fields():
    full = _full()
    derived = small(full, "x-small", {"max_num_iterations": 7, "pipeline.model.hidden_dim": 8})
    assert derived.method_name == "x-small" and derived.max_num_iterations == 7
    assert derived.pipeline.model.hidden_dim == 8
    assert full.max_num_iterations == 25000 and full.pipeline.model.hidden_dim != 8  # the full preset is untouched
    assert derived.pipeline is not full.pipeline


@pytest.mark.parametrize("path", ["pipeline.model.hiden_dim", "pipeline.no_such.field", "max_iterations"])
def test_small_refuses_a_path_that_names_no_field(path):
    with pytest.raises(AttributeError, match="names no field"):
        small(_full(), "x-small", {path: 1})


def test_every_preset_runs_where_it_is_and_registers_with_the_package_trainer():
    from importlib.metadata import entry_points

    from ns_diffusion_methods.compat.device import default_device_type
    from ns_diffusion_methods.engine import DiffusionTrainerConfig

    specs = [e.load() for e in entry_points(group="nerfstudio.method_configs")
             if e.value.startswith("ns_diffusion_methods")]
    assert len(specs) == 12
    for spec in specs:
        assert isinstance(spec.config, DiffusionTrainerConfig), spec.config.method_name
        assert spec.config.machine.device_type == default_device_type()
        assert spec.config.vis == "viewer"


def test_trainer_config_and_the_shared_optimizer_groups():
    config = trainer_config("m", pipeline=None, optimizers=nerfacto_optimizers(max_steps=123), max_num_iterations=5)
    assert config.method_name == "m" and config.max_num_iterations == 5
    assert set(config.optimizers) == {"proposal_networks", "fields", "camera_opt"}
    assert config.optimizers["fields"]["scheduler"].max_steps == 123
