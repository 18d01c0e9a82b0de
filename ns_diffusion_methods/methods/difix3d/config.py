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

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from ns_diffusion_methods.compat.device import default_device_type, default_implementation
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

#: the official gsplat example lowers every Gaussian learning rate for the fixing phase
SPLAT_FIX_PHASE_LR_MULTS = {"means": 0.1, "scales": 0.2, "quats": 0.2, "opacities": 0.2, "features_dc": 0.02,
                            "features_rest": 0.02}


def nerfacto_optimizers() -> dict:
    """nerfstudio's nerfacto optimizers (same groups, so nerfacto checkpoints' optimizer states load)."""
    return {
        "proposal_networks": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                              "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000)},
        "fields": {"optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                   "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.0001, max_steps=200000)},
        "camera_opt": {"optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15),
                       "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=5000)},
    }


def splatfacto_optimizers(max_steps: int = 30000) -> dict:
    """nerfstudio's splatfacto optimizers (same groups, so splatfacto checkpoints' optimizer states load)."""
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


def difix3d_nerfacto_config() -> DiffusionTrainerConfig:
    """``difix3d-nerfacto``: paper settings."""
    config = DiffusionTrainerConfig(
        method_name="difix3d-nerfacto",
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=30000,
        mixed_precision=True,
        pipeline=Difix3DPipelineConfig(
            datamanager=Difix3DNerfactoDataManagerConfig(),
            model=Difix3DNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                average_init_density=0.01,
                camera_optimizer=NovelViewCameraOptimizerConfig(mode="SO3xR3"),
                implementation=default_implementation(),
            ),
            pseudo_probability=0.4,
        ),
        optimizers=nerfacto_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )
    config.machine.device_type = default_device_type()
    return config


def difix3d_nerfacto_small_config() -> DiffusionTrainerConfig:
    """``difix3d-nerfacto-small``: same code, a small nerfacto, 1500 steps."""
    config = difix3d_nerfacto_config()
    config.method_name = "difix3d-nerfacto-small"
    config.max_num_iterations = 1500
    config.steps_per_save = 500
    config.steps_per_eval_batch = 0
    config.steps_per_eval_image = 0
    config.steps_per_eval_all_images = 0
    config.mixed_precision = False
    pipeline = config.pipeline
    assert isinstance(pipeline, Difix3DPipelineConfig)
    pipeline.steps_per_fix = 150
    pipeline.fix_batch_size = 8
    datamanager = pipeline.datamanager
    assert isinstance(datamanager, Difix3DNerfactoDataManagerConfig)
    datamanager.train_num_rays_per_batch = 1024
    datamanager.eval_num_rays_per_batch = 1024
    datamanager.patch_size = 8
    model = pipeline.model
    assert isinstance(model, Difix3DNerfactoModelConfig)
    model.eval_num_rays_per_chunk = 4096
    model.num_proposal_samples_per_ray = (32, 16)
    model.num_nerf_samples_per_ray = 16
    model.hidden_dim = 32
    model.hidden_dim_color = 32
    model.max_res = 128
    model.log2_hashmap_size = 14
    model.num_levels = 8
    config.viewer.num_rays_per_chunk = 4096
    return config


def difix3d_splat_config() -> DiffusionTrainerConfig:
    """``difix3d-splat``: paper (official gsplat example) settings."""
    config = DiffusionTrainerConfig(
        method_name="difix3d-splat",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
        pipeline=Difix3DPipelineConfig(
            datamanager=Difix3DSplatDataManagerConfig(),
            model=Difix3DSplatModelConfig(),
            pseudo_probability=0.3,
            pseudo_loss_mult=0.3,
            real_loss_mult=1.5,
            min_pseudo_accumulation=0.5,
            fix_phase_lr_mults=dict(SPLAT_FIX_PHASE_LR_MULTS),
        ),
        optimizers=splatfacto_optimizers(),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )
    config.machine.device_type = default_device_type()
    return config


def difix3d_splat_small_config() -> DiffusionTrainerConfig:
    """``difix3d-splat-small``: same code, a few thousand Gaussians, 1500 steps (densifying until step 1000)."""
    config = difix3d_splat_config()
    config.method_name = "difix3d-splat-small"
    config.max_num_iterations = 1500
    config.steps_per_save = 500
    config.steps_per_eval_image = 0
    config.steps_per_eval_all_images = 0
    config.optimizers = splatfacto_optimizers(max_steps=1500)
    pipeline = config.pipeline
    assert isinstance(pipeline, Difix3DPipelineConfig)
    pipeline.steps_per_fix = 150
    pipeline.fix_batch_size = 8
    model = pipeline.model
    assert isinstance(model, Difix3DSplatModelConfig)
    model.num_random = 4000
    model.random_scale = 3.0
    model.sh_degree = 1
    model.sh_degree_interval = 200
    model.warmup_length = 100
    model.refine_every = 50
    model.reset_alpha_every = 10
    model.stop_split_at = 1000
    model.stop_screen_size_at = 1000
    model.resolution_schedule = 200
    model.num_downscales = 1
    return config


difix3d_nerfacto = MethodSpecification(
    config=difix3d_nerfacto_config(),
    description="Difix3D+ on nerfacto: progressive pseudo views fixed by Difix, and a render-time fixed output "
                "(rgb_fixed).",
)
difix3d_nerfacto_small = MethodSpecification(
    config=difix3d_nerfacto_small_config(),
    description="difix3d-nerfacto with a small nerfacto for CPU runs and tests (use --pipeline.fixer.model tiny "
                "offline).",
)
difix3d_splat = MethodSpecification(
    config=difix3d_splat_config(),
    description="Difix3D+ on splatfacto (runs on CPU through a pure-torch rasterizer): progressive pseudo views "
                "fixed by Difix, and a render-time fixed output (rgb_fixed).",
)
difix3d_splat_small = MethodSpecification(
    config=difix3d_splat_small_config(),
    description="difix3d-splat with a few thousand Gaussians for CPU runs and tests (use --pipeline.fixer.model tiny "
                "offline).",
)
