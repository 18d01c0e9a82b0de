"""``mald-nerf`` and ``mald-nerf-small``: method presets registered with nerfstudio (``ns-train mald-nerf``).

- ``mald-nerf``: the paper's method with [REC] defaults where the paper's values are unknown (reference
  ``mald-nerf.md`` §1.9): nerfacto at full size, 25k iterations (Zip-NeRF), 4096 rays plus 4 patches of 64 px per
  step, SD-2-inpainting customised on the scene, dataset updates k = 0..8 (K = 8) at steps 2500, 5000, ..., 22500,
  t from 0.98 T down to 0.3 T.
- ``mald-nerf-small``: the same code with small sizes for CPUs and quick checks: a small nerfacto, 64 px-class images,
  256 rays plus 2 patches of 16 px, the ``opencv`` inpainter (no weights, offline), 1000 iterations with dataset
  updates at steps 200, 400, 600 and 800 (K = 3; skipped with ``opencv``, which ignores renders), no hash decay, and
  weaker adversarial terms that start at step 100 (measured at this scale; see the method's README).
  ``ns-diffusion demo`` trains it.

Both run on a machine without CUDA without extra flags (CPU device and nerfstudio's torch hash grids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from ns_diffusion_methods.compat.device import default_device_type
from ns_diffusion_methods.engine import DiffusionTrainerConfig
from ns_diffusion_methods.gan import PatchDiscriminatorConfig
from ns_diffusion_methods.inpainters import InpainterConfig
from ns_diffusion_methods.methods.mald_nerf.datamanager import MaldNerfDataManagerConfig
from ns_diffusion_methods.methods.mald_nerf.model import MaldNerfModelConfig
from ns_diffusion_methods.methods.mald_nerf.pipeline import MaldNerfPipelineConfig

#: lazy R1 every 16 steps: StyleGAN2 scales the discriminator's Adam lr and betas by c = 16 / 17
_LAZY_C = 16 / 17


@dataclass
class DiscriminatorAdamConfig(AdamOptimizerConfig):
    """Adam with explicit betas, for the discriminator (StyleGAN2 uses betas (0, 0.99))."""

    _target: type = torch.optim.Adam
    betas: Tuple[float, float] = (0.0, 0.99 ** _LAZY_C)
    """Adam's (beta1, beta2): StyleGAN2's (0, 0.99), adjusted for lazy R1 (beta ** (16/17))."""


def _optimizers(max_steps: int, disc_lr: float) -> dict:
    return {
        "proposal_networks": {
            "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
        },
        "fields": {
            "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
        },
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000),
        },
        "discriminator": {
            "optimizer": DiscriminatorAdamConfig(lr=disc_lr, eps=1e-8),
            "scheduler": None,
        },
    }


mald_nerf_config = DiffusionTrainerConfig(
    method_name="mald-nerf",
    steps_per_eval_batch=500,
    steps_per_eval_image=500,
    steps_per_save=2000,
    max_num_iterations=25000,
    mixed_precision=True,
    pipeline=MaldNerfPipelineConfig(
        datamanager=MaldNerfDataManagerConfig(train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096,
                                              mask_patch_size=64, num_mask_patches=4),
        model=MaldNerfModelConfig(eval_num_rays_per_chunk=1 << 15, average_init_density=0.01),
        discriminator=PatchDiscriminatorConfig(patch_size=64),
        inpainter=InpainterConfig(),
        update_every=2500,
        num_updates=8,
    ),
    # nerfacto's optimisers (its decay horizon of 200k steps), StyleGAN2's discriminator lr 0.002 (lazy-R1 adjusted)
    optimizers=_optimizers(max_steps=200000, disc_lr=0.002 * _LAZY_C),
    viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
    machine=MachineConfig(device_type=default_device_type()),
    vis="viewer",
)

mald_nerf_small_config = DiffusionTrainerConfig(
    method_name="mald-nerf-small",
    steps_per_eval_batch=0,
    steps_per_eval_image=500,
    steps_per_eval_all_images=0,
    steps_per_save=500,
    max_num_iterations=1000,
    mixed_precision=True,
    pipeline=MaldNerfPipelineConfig(
        datamanager=MaldNerfDataManagerConfig(train_num_rays_per_batch=256, eval_num_rays_per_batch=256,
                                              mask_patch_size=16, num_mask_patches=2),
        model=MaldNerfModelConfig(
            eval_num_rays_per_chunk=4096, average_init_density=0.01, hidden_dim=32, hidden_dim_color=32,
            num_levels=8, max_res=128, log2_hashmap_size=14, num_proposal_samples_per_ray=(32, 16),
            num_nerf_samples_per_ray=16, proposal_weights_anneal_max_num_iters=300, proposal_warmup=300,
            # measured on the synthetic capture (300 iterations, README "Small preset"): Zip-NeRF's hash decay 0.1
            # costs 2 dB full-frame PSNR at this scale (768 rays per step, 2^14 tables)
            hash_decay_loss_mult=0.0,
            proposal_net_args_list=[
                {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 64, "use_linear": False},
                {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 128, "use_linear": False},
            ],
        ),
        discriminator=PatchDiscriminatorConfig(patch_size=16, base_channels=32, max_channels=128),
        # measured as above: with the full-size weights (λ_adv 0.05, λ_fm 1 from step 0) the adversarial gradient
        # through 2 patches per step disturbs the whole scene before its geometry has formed
        adversarial_loss_mult=0.01,
        feature_matching_loss_mult=0.1,
        adversarial_start_step=100,
        inpainter=InpainterConfig(model="opencv"),
        update_every=200,
        num_updates=3,
        num_logged_images=4,
    ),
    optimizers=_optimizers(max_steps=10000, disc_lr=0.002 * _LAZY_C),
    viewer=ViewerConfig(num_rays_per_chunk=4096),
    machine=MachineConfig(device_type=default_device_type()),
    vis="viewer",
)

mald_nerf = MethodSpecification(
    config=mald_nerf_config,
    description="MALD-NeRF object removal: masked adversarial training, scene-customised inpainting LDM, iterative "
                "dataset update (ECCV 2024).")
mald_nerf_small = MethodSpecification(
    config=mald_nerf_small_config,
    description="MALD-NeRF with small sizes and the OpenCV inpainter: trains in minutes on a CPU.")
