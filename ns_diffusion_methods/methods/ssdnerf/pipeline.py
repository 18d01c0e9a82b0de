"""The SSDNeRF pipeline: Algorithm 1 per training iteration, and the reconstruction protocol as ``ns-eval``.

- :meth:`SSDNeRFPipeline.train_step` runs one outer iteration of single-stage training (called by
  :class:`ns_diffusion_methods.methods.ssdnerf.trainer.SSDNeRFTrainer`, which replaces nerfstudio's single
  backward/step with it).
- :meth:`SSDNeRFPipeline.get_average_eval_image_metrics` (what ``ns-eval`` calls) reconstructs every held-out object
  from 1 and from 2 input views (guided sampling, then fine-tuning) and scores all other views; the JSON results hold
  ``psnr_1v``, ``ssim_1v``, ``lpips_1v`` (where available), their ``_std``, and the same for ``2v``.
- The viewer gets a "Training object" slider choosing the object it renders.
- :meth:`SSDNeRFPipeline.checkpoint_state_dict` (what the package's trainer saves) writes the per-object buffers in
  chunks, with the Adam moments in bfloat16 (:mod:`ns_diffusion_methods.methods.ssdnerf.checkpoints`).
- On several GPUs (``ns-train ssdnerf --machine.num-devices N``) each rank trains its own share of the objects
  (objects ``rank, rank + N, ...``: their codes and Adam states live only there), the decoder and U-Net start from
  rank 0's weights and average their gradients over the ranks, and checkpoints gather every rank's codes into the
  usual single file on rank 0, so ``--load-dir`` resumes with any number of devices. N ranks with B objects per
  batch train as one process with N x B objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerSlider
from torch.cuda.amp.grad_scaler import GradScaler

from ns_diffusion_methods.compat import enable_for_package_runs
from ns_diffusion_methods.data.multi_object import MultiObjectDataManager, MultiObjectDataManagerConfig
from ns_diffusion_methods.engine.distributed import broadcast_module, is_distributed
from ns_diffusion_methods.engine.pipeline import DiffusionPipeline
from ns_diffusion_methods.engine.schedulers import step_decay
from ns_diffusion_methods.errors import DataError, UserFacingError
from ns_diffusion_methods.methods.ssdnerf.checkpoints import streamed_code_state
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel, SSDNeRFModelConfig
from ns_diffusion_methods.methods.ssdnerf.reconstruction import (
    ReconstructionSettings,
    evaluate_reconstruction,
    render_views,
)
from ns_diffusion_methods.methods.ssdnerf.training import RayBatch, inner_steps_at, single_stage_step
from ns_diffusion_methods.metrics.image import psnr_from_mse
from ns_diffusion_methods.metrics.lpips import drop_unavailable


@dataclass
class SSDNeRFPipelineConfig(VanillaPipelineConfig):
    """Single-stage training (Algorithm 1) and the reconstruction protocol (defaults: the paper's SRN cars model)."""

    _target: Type = field(default_factory=lambda: SSDNeRFPipeline)
    datamanager: MultiObjectDataManagerConfig = field(default_factory=lambda: MultiObjectDataManagerConfig(
        mode="rays", objects_per_batch=16, rays_per_object=4096))
    """Batches of B objects x R rays (paper: 16 x 4096). B is per device: on N devices, B = 16 / N keeps the paper's
    batch."""
    model: SSDNeRFModelConfig = field(default_factory=SSDNeRFModelConfig)
    """Codes, decoder, diffusion prior."""
    inner_steps: Tuple[int, ...] = (16, 4)
    """K_in, the code steps per outer iteration, per training phase (paper: 16, then 4)."""
    inner_steps_milestones: Tuple[int, ...] = (2000,)
    """Iterations at which K_in moves to the next value of ``inner_steps`` (paper: 2k)."""
    code_lr: float = 1e-2
    """Learning rate of the per-object code Adams (paper recons: 1e-2; uncond: 5e-3)."""
    code_lr_milestones: Tuple[int, ...] = ()
    """Iterations at which the code learning rate is multiplied by ``code_lr_gamma`` (paper uncond: 500k, i.e.
    5e-3 -> 2.5e-3; recons: none)."""
    code_lr_gamma: float = 0.5
    """Factor applied to the code learning rate at each of ``code_lr_milestones`` (paper uncond: 0.5)."""
    code_betas: Tuple[float, float] = (0.9, 0.999)
    """Adam betas of the codes."""
    checkpoint_moments: Literal["bfloat16", "float32"] = "bfloat16"
    """Precision of the per-object Adam moments in checkpoints (the codes are always saved exactly, in float32).
    bfloat16 (float32's exponent range, relative rounding <= 2^-8) makes a checkpoint 2/3 of the float32 size (SRN
    cars: 5.8 instead of 8.7 GB); float32 resumes the optimiser bit for bit."""
    checkpoint_chunk_objects: int = 64
    """Objects per chunk when the per-object buffers are written to a checkpoint: the extra memory of a save (64
    objects at paper settings: at most 75 MB)."""

    eval_num_input_views: Tuple[int, ...] = (1, 2)
    """Settings of the reconstruction protocol: numbers of input views (1-view and 2-view)."""
    eval_init: Literal["guided", "unguided", "mean", "zero"] = "guided"
    """Test-time code initialisation: guided DDIM (paper), unguided DDIM, the mean training code, or a near-zero
    code (the official ``cond_mode='optim'``: fine-tuning from scratch) (ablations)."""
    eval_finetune: Literal["prior", "render", "none"] = "prior"
    """Test-time fine-tuning: with the diffusion prior (paper), rendering loss only, or none (ablations)."""
    eval_ddim_steps: int = 75
    """DDIM steps of guided sampling (paper: 75)."""
    guidance_gain: float = 3.2
    """lambda_gd / 2^14: the guidance scale is gain x 2^14 (official cars: 3.2 x 2^14; chairs 0.4 x 2^14), applied to
    the gradient of the mean rendering loss of each step's rays, whose weight counts those rays as N_v's pixels."""
    eval_rays_per_step: int = 2**14
    """Rays per object rendered at each guidance / fine-tuning step (paper: 2^14)."""
    langevin_steps: int = 0
    """Langevin corrector steps per DDIM step (paper: 0 cars, 5 chairs)."""
    langevin_delta: float = 0.4
    """Langevin step size delta (paper chairs: 0.4)."""
    langevin_t_range: Tuple[int, int] = (0, 1000)
    """Langevin steps follow a DDIM step to t_prev when range[0] < t_prev < range[1] (official default: 0, 1000)."""
    finetune_outer_steps: Tuple[int, ...] = (25, 50)
    """K_out of fine-tuning for 1, 2 (, ...) input views; the last value serves larger settings (paper: 25, 50)."""
    finetune_inner_steps: int = 4
    """K_in of fine-tuning (paper: 4)."""
    finetune_lr: Tuple[float, ...] = (5e-3, 1e-2)
    """Fine-tuning learning rate for 1, 2 (, ...) input views (paper: 5e-3, 1e-2)."""
    finetune_lr_gamma: float = 0.998
    """Exponential decay of the fine-tuning learning rate per inner step (paper: 0.998)."""
    finetune_prior_weight: float = 1.0
    """c'_diff, the diffusion-loss weight during fine-tuning (paper: 1)."""
    finetune_init_margin: float = 1e-6
    """Fine-tuning starts from atanh(code / 2) with |code / 2| clamped to 1 - margin. The official code clamps
    nothing (elements sampled at exactly +-2 become infinite); 1e-6 only avoids the infinity, both leave such
    elements stuck (tanh gradient ~0); a few percent lets them move."""
    eval_batch_size: int = 8
    """Held-out objects reconstructed together."""
    eval_max_objects: int = -1
    """Reconstruct only the first N held-out objects (-1: all)."""
    eval_seed: int = 0
    """Seed of the test-time noise and ray order."""
    eval_lpips: bool = True
    """Score LPIPS (VGG) where its weights are available."""

    def code_lr_at(self, step: int) -> float:
        """The per-object code Adams' learning rate at training iteration ``step``: ``code_lr`` x ``code_lr_gamma``
        per milestone of ``code_lr_milestones`` reached."""
        return self.code_lr * step_decay(step, tuple(self.code_lr_milestones), self.code_lr_gamma)


class SSDNeRFPipeline(DiffusionPipeline):
    """See the module docstring."""

    config: SSDNeRFPipelineConfig
    datamanager: MultiObjectDataManager
    _model: SSDNeRFModel

    def __init__(self, config: SSDNeRFPipelineConfig, device: str,
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 grad_scaler: Optional[GradScaler] = None):
        enable_for_package_runs()
        if config.datamanager.mode != "rays":
            raise UserFacingError("ssdnerf needs `--pipeline.datamanager.mode rays` (batches of objects x rays).")
        # VanillaPipeline's set-up, with the objects sharded over the ranks and no DDP wrapper (Algorithm 1 calls the
        # model's losses directly; the gradients are averaged in `single_stage_step`)
        self._set_up_datamanager(config, device, test_mode, world_size, local_rank)
        shard = self.datamanager.object_shard
        if is_distributed(world_size):
            smallest = shard.num_items // shard.world_size
            batch = config.datamanager.objects_per_batch
            if smallest < batch:
                raise UserFacingError(
                    f"ssdnerf on {world_size} devices trains each device on its own share of the "
                    f"{shard.num_items} training objects, at least {smallest} each, but batches have "
                    f"{batch} objects per device. Lower --pipeline.datamanager.objects-per-batch to {smallest} or "
                    f"less, or train on fewer devices.")
        self._set_up_model(device, grad_scaler, shard=shard)
        if is_distributed(world_size):  # nerfstudio seeds every rank differently: start from rank 0's networks
            for module in (self.model.decoder, self.model.unet, self.model.decoder_ema, self.model.unet_ema):
                broadcast_module(module)
            torch.distributed.broadcast(self.model.diffusion_norm, 0)
        num_objects = self.model.num_objects
        hint = "Which training object the viewer renders."
        if shard.world_size > 1:
            hint += (f" While training on {shard.world_size} devices it shows the first device's objects (every "
                     f"{shard.world_size}th: the nearest one below the chosen object).")
        self.viewer_object = ViewerSlider(name="Training object", default_value=0, min_value=0,
                                          max_value=max(num_objects - 1, 1), step=1, cb_hook=self._show_object,
                                          hint=hint)
        self._eval_image_count = 0

    @property
    def model(self) -> SSDNeRFModel:
        return self._model

    def _show_object(self, element: ViewerSlider) -> None:
        self.model.active_object = int(element.value)
        self.model.display_code = None

    @property
    def pixels_per_view(self) -> int:
        """H x W of the training images (N_v of the rendering-loss weight counts pixels, not views)."""
        height, width = self.datamanager.train_images.shape[1:3]
        return int(height) * int(width)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_needs_all_ranks(self) -> bool:
        """Whether the trainer must call :meth:`checkpoint_state_dict` on every rank (the codes are sharded)."""
        return self.model.shard.world_size > 1

    def checkpoint_state_dict(self) -> Dict[str, Any]:
        """``state_dict()`` with the per-object buffers replaced by chunked writers (codes float32, moments in
        ``checkpoint_moments``), for the package's trainer (:func:`~ns_diffusion_methods.engine.trainer.
        atomic_torch_save`). The file it makes loads like any checkpoint (``load_state_dict``, ``ns-eval``).

        On several GPUs every rank calls it (:attr:`checkpoint_needs_all_ranks`): the writers gather every rank's
        objects chunk by chunk into rank 0's file, in the global object order."""
        state = self.state_dict()
        state.update(streamed_code_state(self.model, "_model.", self.config.checkpoint_moments,
                                         self.config.checkpoint_chunk_objects))
        return state

    # ------------------------------------------------------------------ training
    def get_train_loss_dict(self, step: int):
        raise UserFacingError("ssdnerf trains with its own trainer (Algorithm 1 steps several optimisers per "
                              "iteration); run it through `ns-train ssdnerf`, whose config sets "
                              "_target=SSDNeRFTrainer.")

    def train_step(self, step: int, optimizers: Optimizers) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """One outer iteration of Algorithm 1 on the next batch of objects, with the schedules at ``step`` (K_in,
        code learning rate, loss weights, loss-normaliser freezing); updates the EMAs."""
        cfg = self.config
        first_rays, first_batch = self.datamanager.next_train(step)
        objects = first_batch["object_indices"]

        pixels = self.pixels_per_view

        def ray_batches(k: int) -> RayBatch:
            if k == 0:
                return RayBatch.from_datamanager(first_rays, first_batch, pixels)
            rays, batch = self.datamanager.sample_rays(objects, self.datamanager.config.rays_per_object)
            return RayBatch.from_datamanager(rays, batch, pixels)

        k_in = inner_steps_at(step, cfg.inner_steps, cfg.inner_steps_milestones)
        freeze_after = self.model.config.freeze_norm_after
        losses, metrics = single_stage_step(
            self.model, objects, ray_batches, k_in, cfg.code_lr_at(step),
            diffusion_optimizer=optimizers.optimizers["diffusion"], decoder_optimizer=optimizers.optimizers["decoder"],
            code_betas=cfg.code_betas, update_norm=freeze_after < 0 or step < freeze_after, step=step,
            world_size=self.world_size)
        # the EMA's half-life counts the objects seen by all ranks
        metrics["ema_beta"] = torch.tensor(self.model.update_ema(step, len(objects) * self.world_size))
        return losses, metrics

    # ------------------------------------------------------------------ evaluation during training
    @torch.no_grad()
    def get_eval_loss_dict(self, step: int):
        """Rendering loss of random rays of training objects (EMA decoder, no gradients)."""
        self.eval()
        objects = self.datamanager.next_objects()
        rays, batch = self.datamanager.sample_rays(objects, self.datamanager.config.rays_per_object)
        ray_batch = RayBatch.from_datamanager(rays, batch, self.pixels_per_view)
        code = self.model.activate(self.model.object_codes_pre(objects))
        out = self.model.render_rays(code, ray_batch.origins, ray_batch.directions, decoder=self.model.eval_decoder)
        loss = self.model.rendering_loss(out["rgb"], ray_batch.target, ray_batch.num_pixels, step=step).mean()
        mse = (out["rgb"] - ray_batch.target).square().mean()
        self.train()
        return out, {"rendering_loss": loss}, {"psnr": psnr_from_mse(mse)}

    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int):
        """A full view of a training object rendered from its code (cycling through objects and views)."""
        self.eval()
        owned = self.model.shard.items  # this process's objects (all of them in one process)
        obj = int(owned[self._eval_image_count % len(owned)])
        views = self.datamanager.train_object(obj)
        view = (self._eval_image_count // len(owned)) % views.images.shape[0]
        self._eval_image_count += 1
        code = self.model.activate(self.model.object_codes_pre(torch.tensor([obj]))[0])
        render = render_views(self.model, code, views.cameras[view:view + 1])[0]
        outputs = {"rgb": render, "accumulation": torch.ones_like(render[..., :1])}
        metrics, images = self.model.get_image_metrics_and_images(outputs, {"image": views.images[view]})
        metrics["num_rays"] = float(render.shape[0] * render.shape[1])
        self.train()
        return drop_unavailable(metrics), images

    # ------------------------------------------------------------------ the reconstruction protocol (ns-eval)
    def reconstruction_settings(self, num_input_views: int) -> ReconstructionSettings:
        """Test-time settings of the ``num_input_views``-view setting."""
        cfg = self.config
        pick = lambda values: values[min(num_input_views, len(values)) - 1]  # noqa: E731
        return ReconstructionSettings(
            init=cfg.eval_init, finetune=cfg.eval_finetune, ddim_steps=cfg.eval_ddim_steps,
            guidance_gain=cfg.guidance_gain, rays_per_step=cfg.eval_rays_per_step,
            langevin_steps=cfg.langevin_steps, langevin_delta=cfg.langevin_delta,
            langevin_t_range=tuple(cfg.langevin_t_range), finetune_init_margin=cfg.finetune_init_margin,
            finetune_outer_steps=pick(cfg.finetune_outer_steps), finetune_inner_steps=cfg.finetune_inner_steps,
            finetune_lr=pick(cfg.finetune_lr), finetune_lr_gamma=cfg.finetune_lr_gamma,
            finetune_prior_weight=cfg.finetune_prior_weight)

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False) -> Dict[str, float]:
        """Reconstruct every held-out object from 1 and 2 input views and score all other views.

        Returns ``{metric}_{k}v`` and ``{metric}_{k}v_std`` for metric in psnr, ssim, lpips (where available) and
        each setting k, plus ``num_objects`` and ``num_images_{k}v``.
        """
        dm = self.datamanager
        if dm.eval_dataset is None or dm.num_eval_objects == 0:
            raise DataError(f"No held-out objects to evaluate: {dm.dataparser.split_folder('test')} is empty. The "
                            f"reconstruction protocol needs test objects with several views each.")
        num_objects = dm.num_eval_objects
        if self.config.eval_max_objects > 0:
            num_objects = min(num_objects, self.config.eval_max_objects)
        was_training = self.training
        self.eval()
        results: Dict[str, float] = {"num_objects": float(num_objects)}
        try:
            for k in self.config.eval_num_input_views:
                settings = self.reconstruction_settings(k)
                metrics = evaluate_reconstruction(
                    self.model, lambda i, k=k: dm.eval_object(i, k), num_objects, settings,
                    batch_size=self.config.eval_batch_size, seed=self.config.eval_seed, output_path=output_path,
                    prefix=f"{k}v_", with_lpips=self.config.eval_lpips, console=CONSOLE)
                for key, value in metrics.items():
                    if key == "num_images":
                        results[f"num_images_{k}v"] = value
                    elif key.endswith("_std"):
                        if get_std:
                            results[f"{key[:-4]}_{k}v_std"] = value
                    else:
                        results[f"{key}_{k}v"] = value
        finally:
            self.train(was_training)
        return drop_unavailable(results)

    def get_param_groups(self) -> Dict[str, List[torch.nn.Parameter]]:
        return self.model.get_param_groups()
