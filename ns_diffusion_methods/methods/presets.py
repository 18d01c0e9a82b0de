"""One way to write a method preset: every method's ``config.py`` builds its presets with these functions.

- :func:`trainer_config`: the package's trainer config (:class:`~ns_diffusion_methods.engine.DiffusionTrainerConfig`,
  or a subclass) with what every preset shares: the device (CUDA where there is one, else the CPU, so every method
  runs on a machine without a GPU without extra flags), the viewer and its ray chunk;
- :func:`small`: the ``NAME-small`` preset derived from the full one: a copy with dotted-path changes, each of which
  must name an existing field (a renamed field breaks the preset at import, not silently);
- :func:`nerfacto_optimizers`, :func:`splatfacto_optimizers`: nerfstudio's param groups of nerfacto and splatfacto,
  so the methods built on them load stock checkpoints with their optimizer states;
- :func:`method`: the ``MethodSpecification`` nerfstudio registers.

Import-light: nerfstudio configs only (entry-point modules import this).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, Mapping, Optional, Type, TypeVar

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

from ns_diffusion_methods.compat.device import default_device_type
from ns_diffusion_methods.engine import DiffusionTrainerConfig

C = TypeVar("C", bound=TrainerConfig)


def trainer_config(method_name: str, pipeline: Any, optimizers: Dict[str, Any], *,
                   viewer_rays_per_chunk: int = 1 << 15, config_class: Type[C] = DiffusionTrainerConfig,  # type: ignore
                   **fields: Any) -> C:
    """A method's trainer config.

    Args:
        method_name: the ``ns-train`` name.
        pipeline: the pipeline config.
        optimizers: the param groups' optimizers and schedulers.
        viewer_rays_per_chunk: rays per chunk of the viewer's renders.
        config_class: :class:`~ns_diffusion_methods.engine.DiffusionTrainerConfig` or a subclass of it.
        fields: any other ``TrainerConfig`` field (``max_num_iterations``, ``steps_per_save``, ...).
    """
    return config_class(method_name=method_name, pipeline=pipeline, optimizers=optimizers,
                        viewer=ViewerConfig(num_rays_per_chunk=viewer_rays_per_chunk),
                        machine=MachineConfig(device_type=default_device_type()), vis="viewer", **fields)


def _set(target: Any, path: str, value: Any, root_name: str) -> None:
    *parents, name = path.split(".")
    for part in parents:
        if not dataclasses.is_dataclass(target) or not hasattr(target, part):
            raise AttributeError(f"{root_name}: `{path}` names no field ({type(target).__name__} has no `{part}`).")
        target = getattr(target, part)
    fields = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    if name not in fields:
        raise AttributeError(f"{root_name}: `{path}` names no field ({type(target).__name__} has no `{name}`).")
    setattr(target, name, value)


def small(config: C, method_name: str, changes: Mapping[str, Any], viewer_rays_per_chunk: Optional[int] = None) -> C:
    """The small preset of ``config``: a deep copy named ``method_name`` with ``changes`` applied.

    Args:
        config: the full preset.
        method_name: the small preset's ``ns-train`` name (``NAME-small``).
        changes: ``{"dotted.field.path": value}``, e.g. ``{"pipeline.model.hidden_dim": 32}``; every path must name
            an existing field.
        viewer_rays_per_chunk: the viewer's rays per chunk, if it changes.
    """
    derived = copy.deepcopy(config)
    derived.method_name = method_name
    for path, value in changes.items():
        _set(derived, path, copy.deepcopy(value), method_name)
    if viewer_rays_per_chunk is not None:
        derived.viewer = ViewerConfig(num_rays_per_chunk=viewer_rays_per_chunk)
    return derived


def method(config: TrainerConfig, description: str) -> MethodSpecification:
    """The ``MethodSpecification`` nerfstudio registers (``[project.entry-points."nerfstudio.method_configs"]``)."""
    return MethodSpecification(config=config, description=description)


def nerfacto_optimizers(max_steps: int = 200_000) -> Dict[str, Any]:
    """nerfstudio's nerfacto param groups (same names and settings, so nerfacto checkpoints' optimizer states load);
    ``max_steps`` is the decay horizon of the proposal networks and fields (nerfacto: 200k)."""
    return {
        "proposal_networks": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                              "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps)},
        "fields": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                   "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps)},
        "camera_opt": {"optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                       "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000)},
    }


def splatfacto_optimizers(max_steps: int = 30_000) -> Dict[str, Any]:
    """nerfstudio's splatfacto param groups (same names and settings, so splatfacto checkpoints' optimizer states
    load); ``max_steps`` is the decay horizon of the means, camera and bilateral-grid rates."""
    return {
        "means": {"optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
                  "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps)},
        "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
        "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
        "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
        "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
        "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
        "camera_opt": {"optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
                       "scheduler": ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=max_steps,
                                                                    warmup_steps=1000, lr_pre_warmup=0)},
        "bilateral_grid": {"optimizer": AdamOptimizerConfig(lr=2e-3, eps=1e-15),
                           "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps,
                                                                        warmup_steps=1000, lr_pre_warmup=0)},
    }
