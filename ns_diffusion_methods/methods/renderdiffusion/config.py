"""Method presets: ``renderdiffusion`` (paper scale) and ``renderdiffusion-small`` (2 CPU cores, minutes).

``renderdiffusion`` follows the paper where it is known (64×64 images, a 256²×96 triplane, the denoiser
ρ_ψ(e_φ(x_t), v) with an encoder that sees x_t only and summed plane features, x₀-prediction, T = 1000, EG3D-style
decoder and importance sampling) and documented choices elsewhere (README.md, "Choices"; e.g. the yaw-aligned
triplane frame). Its own ShapeNet renders were never released: point ``--data`` at any SRN-layout dataset with square
images (``srn-data``); the images are resized to 64×64 (``srn-data --image-size``, intrinsics scaled with them).

Both presets take the dataparser's radius: auto-detected (0.5 for SRN data, 1 for ``ns-diffusion-synth`` data, which
is in box units) unless ``srn-data --radius`` sets one. The dataparser stops before training when the cameras lie
inside the [-1, 1]^3 triplane box or the images show content outside it (floor included).

``renderdiffusion-small`` is the same code with small sizes: images at the dataset's size (32×32 for the synthetic
data), a 32²×48 triplane, a three-level U-Net of 16/32/32 channels, 16 + 16 samples per ray, 128 random pixels per
image in the loss, training timesteps skewed to low noise (t = T·u²), 50 reverse steps, 4000 steps of batch 8. It is
measured on the varied synthetic objects of ``ns_diffusion_methods.synthetic.varied_objects`` (benchmark
``renderdiffusion-objects``); cameras sit 2.6 units from the origin (radius 1: no rescaling).
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig

from ns_diffusion_methods.data.multi_object import MultiObjectDataManagerConfig
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig
from ns_diffusion_methods.engine import DiffusionTrainerConfig
from ns_diffusion_methods.methods.presets import method, small, trainer_config
from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoderConfig
from ns_diffusion_methods.methods.renderdiffusion.diffusion import ImageDiffusionConfig
from ns_diffusion_methods.methods.renderdiffusion.encoder import TriplaneEncoderConfig
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionModelConfig
from ns_diffusion_methods.methods.renderdiffusion.pipeline import RenderDiffusionPipelineConfig
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig


def _optimizers(lr: float) -> dict:
    return {
        "encoder": {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-8), "scheduler": None},
        "decoder": {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-8), "scheduler": None},
    }


def renderdiffusion_config() -> DiffusionTrainerConfig:
    """Paper scale (64×64 images, N = 256, n_f = 32, 48 + 48 samples, T = 1000 with 1000 reverse steps)."""
    return trainer_config(
        "renderdiffusion",
        RenderDiffusionPipelineConfig(
            datamanager=MultiObjectDataManagerConfig(
                dataparser=SRNDataParserConfig(image_size=64),
                mode="images",
                images_per_batch=16,
            ),
            model=RenderDiffusionModelConfig(
                encoder=TriplaneEncoderConfig(triplane_resolution=256, triplane_channels=32,
                                              block_out_channels=(128, 256, 256, 256), attention_levels=(2, 3),
                                              layers_per_block=2, norm_num_groups=32, upsample_channels=128,
                                              camera_conditioning="none"),
                decoder=TriplaneDecoderConfig(hidden_dim=64, num_hidden_layers=1, plane_reduce="sum",
                                              position_input=True),
                renderer=BoxVolumeRendererConfig(bound=1.0, min_near=0.2, num_samples=48, num_importance_samples=48,
                                                 background=(0.0, 0.0, 0.0), chunk_size=8192),
                diffusion=ImageDiffusionConfig(num_train_timesteps=1000, beta_schedule="linear",
                                               num_inference_steps=1000),
                triplane_frame="yaw",
                background="learned",
                pixels_per_image=-1,
                ema_decay=0.9999,
                reconstruction_t_r=0,
            ),
        ),
        _optimizers(1e-4),
        steps_per_eval_batch=1000,
        steps_per_eval_image=5000,
        steps_per_eval_all_images=100_000,
        steps_per_save=5000,
        max_num_iterations=500_000,
        mixed_precision=False,
    )


def renderdiffusion_small_config() -> DiffusionTrainerConfig:
    """Small preset for 2 CPU cores on 32×32 synthetic objects (see the module docstring)."""
    return small(renderdiffusion_config(), "renderdiffusion-small", {
        "steps_per_eval_batch": 500,
        "steps_per_eval_image": 500,
        "steps_per_eval_all_images": 1_000_000,
        "steps_per_save": 500,
        "max_num_iterations": 4000,
        "pipeline.datamanager.dataparser": SRNDataParserConfig(),
        "pipeline.datamanager.images_per_batch": 8,
        "pipeline.model.encoder": TriplaneEncoderConfig(triplane_resolution=32, triplane_channels=16,
                                                        block_out_channels=(16, 32, 32), attention_levels=(2,),
                                                        layers_per_block=1, norm_num_groups=8, upsample_channels=32,
                                                        camera_conditioning="none"),
        "pipeline.model.renderer": BoxVolumeRendererConfig(bound=1.0, min_near=0.2, num_samples=16,
                                                           num_importance_samples=16, background=(0.0, 0.0, 0.0),
                                                           chunk_size=16384),
        "pipeline.model.diffusion": ImageDiffusionConfig(num_train_timesteps=1000, beta_schedule="linear",
                                                         num_inference_steps=50, timestep_sampling_power=2.0),
        "pipeline.model.pixels_per_image": 128,
        "pipeline.model.ema_decay": 0.999,
        "optimizers": _optimizers(1e-3),
    })


renderdiffusion = method(renderdiffusion_config(), "RenderDiffusion (CVPR 2023): image diffusion whose denoiser "
                                                   "renders a triplane; single-view reconstruction, generation and "
                                                   "3D-aware inpainting. Paper-scale settings.")
renderdiffusion_small = method(renderdiffusion_small_config(), "RenderDiffusion with small sizes: trains in minutes "
                                                               "on 2 CPU cores on the synthetic `objects` data (floor "
                                                               "background).")
