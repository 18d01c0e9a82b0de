"""Method presets: ``difix3d-nerfacto``, ``difix3d-splat`` (paper settings) and their ``-small`` versions.

The full presets are nerfstudio's ``nerfacto`` / ``splatfacto`` presets (same model sizes, optimizers and schedulers,
so their checkpoints load with ``--load-dir``) with the Difix3D pipeline:

- ``difix3d-nerfacto``: the official nerfstudio example's data setting (``VanillaDataManager``, 32x32 patches, 16384
  rays), pseudo views drawn with probability 0.4, losses unweighted;
- ``difix3d-splat``: the official gsplat example's setting (pseudo views with probability 0.3, pseudo loss x0.3 and
  real loss x1.5, pseudo pixels with alpha <= 0.5 ignored, learning rates lowered at the first round, no densification
  during the fixing phase).

Both fix every 1500 steps (the paper; the released code uses 2000) and step 0.5 units per round. The paper's protocol
is ``ns-train nerfacto`` (or ``splatfacto``) for 30k steps, then ``ns-train difix3d-nerfacto --load-dir
<run>/nerfstudio_models`` for 30k more; fixing then starts at the first step. Trained from scratch, fixing starts once
the base has trained (half of the run; splats not before densification ends): see ``fix_start_step`` in
:mod:`~ns_diffusion_methods.methods.difix3d.pipeline`. The ``-small`` presets use the same code with small models,
for CPU runs and tests (from scratch: fixing from step 750 for nerfacto, 1050 for splats).
"""

from __future__ import annotations

from ns_diffusion_methods.compat.device import default_implementation
from ns_diffusion_methods.engine import DiffusionTrainerConfig
from ns_diffusion_methods.methods.difix3d.datamanager import (
    Difix3DNerfactoDataManagerConfig,
    Difix3DSplatDataManagerConfig,
)
from ns_diffusion_methods.methods.difix3d.model import (
    Difix3DNerfactoModelConfig,
    Difix3DSplatModelConfig,
    NovelViewCameraOptimizerConfig,
)
from ns_diffusion_methods.methods.difix3d.pipeline import Difix3DPipelineConfig
from ns_diffusion_methods.methods.presets import (
    method,
    nerfacto_optimizers,
    small,
    splatfacto_optimizers,
    trainer_config,
)

#: the official gsplat example lowers every Gaussian learning rate for the fixing phase
SPLAT_FIX_PHASE_LR_MULTS = {"means": 0.1, "scales": 0.2, "quats": 0.2, "opacities": 0.2, "features_dc": 0.02,
                            "features_rest": 0.02}

#: the small presets' fixing schedule (rounds every 150 steps of 1500, 8 views per fixer call)
_SMALL_FIXING = {"max_num_iterations": 1500, "steps_per_save": 500, "steps_per_eval_image": 0,
                 "steps_per_eval_all_images": 0, "pipeline.steps_per_fix": 150, "pipeline.fix_batch_size": 8}


def difix3d_nerfacto_config() -> DiffusionTrainerConfig:
    """``difix3d-nerfacto``: paper settings."""
    return trainer_config(
        "difix3d-nerfacto",
        Difix3DPipelineConfig(
            datamanager=Difix3DNerfactoDataManagerConfig(),
            model=Difix3DNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=NovelViewCameraOptimizerConfig(mode="SO3xR3"),
                implementation=default_implementation(),
            ),
            pseudo_probability=0.4,
        ),
        nerfacto_optimizers(),
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
    )


def difix3d_nerfacto_small_config() -> DiffusionTrainerConfig:
    """``difix3d-nerfacto-small``: same code, a small nerfacto, 1500 steps."""
    return small(difix3d_nerfacto_config(), "difix3d-nerfacto-small", {
        **_SMALL_FIXING,
        "steps_per_eval_batch": 0,
        "mixed_precision": False,
        "pipeline.datamanager.train_num_rays_per_batch": 1024,
        "pipeline.datamanager.eval_num_rays_per_batch": 1024,
        "pipeline.datamanager.patch_size": 8,
        "pipeline.model.eval_num_rays_per_chunk": 4096,
        "pipeline.model.num_proposal_samples_per_ray": (32, 16),
        "pipeline.model.num_nerf_samples_per_ray": 16,
        "pipeline.model.hidden_dim": 32,
        "pipeline.model.hidden_dim_color": 32,
        "pipeline.model.max_res": 128,
        "pipeline.model.log2_hashmap_size": 14,
        "pipeline.model.num_levels": 8,
    }, viewer_rays_per_chunk=4096)


def difix3d_splat_config() -> DiffusionTrainerConfig:
    """``difix3d-splat``: paper (official gsplat example) settings."""
    return trainer_config(
        "difix3d-splat",
        Difix3DPipelineConfig(
            datamanager=Difix3DSplatDataManagerConfig(),
            model=Difix3DSplatModelConfig(),
            pseudo_probability=0.3,
            pseudo_loss_mult=0.3,
            real_loss_mult=1.5,
            min_pseudo_accumulation=0.5,
            fix_phase_lr_mults=dict(SPLAT_FIX_PHASE_LR_MULTS),
        ),
        splatfacto_optimizers(),
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
    )


def difix3d_splat_small_config() -> DiffusionTrainerConfig:
    """``difix3d-splat-small``: same code, a few thousand Gaussians, 1500 steps (densifying until step 1000)."""
    return small(difix3d_splat_config(), "difix3d-splat-small", {
        **_SMALL_FIXING,
        "optimizers": splatfacto_optimizers(max_steps=1500),
        "pipeline.model.num_random": 4000,
        "pipeline.model.random_scale": 3.0,
        "pipeline.model.sh_degree": 1,
        "pipeline.model.sh_degree_interval": 200,
        "pipeline.model.warmup_length": 100,
        "pipeline.model.refine_every": 50,
        "pipeline.model.reset_alpha_every": 10,
        "pipeline.model.stop_split_at": 1000,
        "pipeline.model.stop_screen_size_at": 1000,
        "pipeline.model.resolution_schedule": 200,
        "pipeline.model.num_downscales": 1,
    })


_OFFLINE = "(offline: pipeline.fixer:difix --pipeline.fixer.model tiny, or pipeline.fixer:identity)"
difix3d_nerfacto = method(difix3d_nerfacto_config(), "Difix3D+ on nerfacto: progressive pseudo views fixed by Difix, "
                                                     "and a render-time fixed output (rgb_fixed).")
difix3d_nerfacto_small = method(difix3d_nerfacto_small_config(),
                                f"difix3d-nerfacto with a small nerfacto for CPU runs and tests {_OFFLINE}.")
difix3d_splat = method(difix3d_splat_config(), "Difix3D+ on splatfacto (runs on CPU through a pure-torch rasterizer): "
                                               "progressive pseudo views fixed by Difix, and a render-time fixed "
                                               "output (rgb_fixed).")
difix3d_splat_small = method(difix3d_splat_small_config(),
                             f"difix3d-splat with a few thousand Gaussians for CPU runs and tests {_OFFLINE}.")
