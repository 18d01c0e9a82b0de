"""``mald-nerf`` and ``mald-nerf-small``: method presets registered with nerfstudio (``ns-train mald-nerf``).

- ``mald-nerf``: the paper's method, with recommended defaults where the paper does not give its values (from
  Zip-NeRF, nerfacto, StyleGAN2 and nerfiller): nerfacto at full size, 25k iterations (Zip-NeRF), 4096 rays plus 4
  patches of 64 px per step, SD-2-inpainting customised on the scene, dataset updates k = 0..8 (K = 8) at steps 2500,
  5000, ..., 22500, t from 0.98 T down to 0.3 T.
- ``mald-nerf-small``: the same code with small sizes for CPUs and quick checks: a small nerfacto, 64 px-class images,
  256 rays plus 2 patches of 16 px, the OpenCV inpainter (no weights, offline), 1000 iterations with dataset updates
  at steps 200, 400, 600 and 800 (K = 3; none with OpenCV, which ignores renders: they happen with
  ``pipeline.inpainter:ldm``), no hash decay, a weaker adversarial term that starts at step 100 and no feature
  matching (measured at this scale; see the method's README). ``ns-diffusion demo`` trains it.

Both run on a machine without CUDA without extra flags (CPU device and nerfstudio's torch hash grids). The inpainter
is a subcommand: ``ns-train mald-nerf-small --data CAPTURE pipeline.inpainter:ldm --pipeline.inpainter.model tiny``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig

from ns_diffusion_methods.gan import PatchDiscriminatorConfig
from ns_diffusion_methods.inpainters import LDMInpainterConfig, OpenCVInpainterConfig
from ns_diffusion_methods.methods.mald_nerf.datamanager import MaldNerfDataManagerConfig
from ns_diffusion_methods.methods.mald_nerf.model import MaldNerfModelConfig
from ns_diffusion_methods.methods.mald_nerf.pipeline import MaldNerfPipelineConfig
from ns_diffusion_methods.methods.presets import method, nerfacto_optimizers, small, trainer_config

#: lazy R1 every 16 steps: StyleGAN2 scales the discriminator's Adam lr and betas by c = 16 / 17
_LAZY_C = 16 / 17


@dataclass
class DiscriminatorAdamConfig(AdamOptimizerConfig):
    """Adam with explicit betas, for the discriminator (StyleGAN2 uses betas (0, 0.99))."""

    _target: type = torch.optim.Adam
    betas: Tuple[float, float] = (0.0, 0.99 ** _LAZY_C)
    """Adam's (beta1, beta2): StyleGAN2's (0, 0.99), adjusted for lazy R1 (beta ** (16/17))."""


def _optimizers(max_steps: int) -> dict:
    """nerfacto's param groups (decay horizon ``max_steps``) and the discriminator's: StyleGAN2's lr 0.002, scaled for
    lazy R1 like its betas."""
    return {**nerfacto_optimizers(max_steps=max_steps),
            "discriminator": {"optimizer": DiscriminatorAdamConfig(lr=0.002 * _LAZY_C, eps=1e-8), "scheduler": None}}


mald_nerf_config = trainer_config(
    "mald-nerf",
    MaldNerfPipelineConfig(
        datamanager=MaldNerfDataManagerConfig(train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096,
                                              mask_patch_size=64, num_mask_patches=4),
        model=MaldNerfModelConfig(eval_num_rays_per_chunk=1 << 15, average_init_density=0.01),
        discriminator=PatchDiscriminatorConfig(patch_size=64),
        inpainter=LDMInpainterConfig(),
        update_every=2500,
        num_updates=8,
    ),
    # nerfacto's optimisers (its decay horizon of 200k steps)
    _optimizers(max_steps=200000),
    steps_per_eval_batch=500,
    steps_per_eval_image=500,
    steps_per_save=2000,
    max_num_iterations=25000,
    mixed_precision=True,
)

mald_nerf_small_config = small(mald_nerf_config, "mald-nerf-small", {
    "steps_per_eval_batch": 0,
    "steps_per_eval_all_images": 0,
    "steps_per_save": 500,
    "max_num_iterations": 1000,
    "pipeline.datamanager.train_num_rays_per_batch": 256,
    "pipeline.datamanager.eval_num_rays_per_batch": 256,
    "pipeline.datamanager.mask_patch_size": 16,
    "pipeline.datamanager.num_mask_patches": 2,
    "pipeline.model.eval_num_rays_per_chunk": 4096,
    "pipeline.model.hidden_dim": 32,
    "pipeline.model.hidden_dim_color": 32,
    "pipeline.model.num_levels": 8,
    "pipeline.model.max_res": 128,
    "pipeline.model.log2_hashmap_size": 14,
    "pipeline.model.num_proposal_samples_per_ray": (32, 16),
    "pipeline.model.num_nerf_samples_per_ray": 16,
    "pipeline.model.proposal_weights_anneal_max_num_iters": 300,
    "pipeline.model.proposal_warmup": 300,
    # measured on the synthetic capture (300 iterations, README "Small preset"): Zip-NeRF's hash decay 0.1 costs 2 dB
    # full-frame PSNR at this scale (768 rays per step, 2^14 tables)
    "pipeline.model.hash_decay_loss_mult": 0.0,
    "pipeline.model.proposal_net_args_list": [
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 14, "num_levels": 5, "max_res": 128, "use_linear": False},
    ],
    "pipeline.discriminator": PatchDiscriminatorConfig(patch_size=16, base_channels=32, max_channels=128),
    # measured as above: with the full-size weights (λ_adv 0.05, λ_fm 1 from step 0) the adversarial gradient through
    # 2 patches per step disturbs the whole scene before its geometry has formed
    "pipeline.adversarial_loss_mult": 0.01,
    # measured on fills that hallucinate other content in every view (README, "mald-nerf-evidence"): feature matching
    # pulls each rendered patch towards its own view's fill, averaging the disagreement like L1 (up to 2.8 dB lost in
    # the hole where other views show it); none at this scale, where no dataset update makes the fills agree
    "pipeline.feature_matching_loss_mult": 0.0,
    "pipeline.adversarial_start_step": 100,
    # with --pipeline.visibility-aware-masks: seen pixels computed when the adversarial terms start (on seeds 10-11 of
    # mald-nerf-evidence step 100 and step 175 scored alike; 100 does not delay the adversarial terms)
    "pipeline.visibility_step": 100,
    "pipeline.inpainter": OpenCVInpainterConfig(),
    "pipeline.update_every": 200,
    "pipeline.num_updates": 3,
    "pipeline.num_logged_images": 4,
    "optimizers": _optimizers(max_steps=10000),
}, viewer_rays_per_chunk=4096)

mald_nerf = method(mald_nerf_config, "MALD-NeRF object removal: masked adversarial training, scene-customised "
                                     "inpainting LDM, iterative dataset update (ECCV 2024).")
mald_nerf_small = method(mald_nerf_small_config, "MALD-NeRF with small sizes and the OpenCV inpainter: trains in "
                                                 "minutes on a CPU.")
