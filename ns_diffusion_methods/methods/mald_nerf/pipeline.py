"""MALD-NeRF's training loop: masked adversarial training, scene customisation and the iterative dataset update.

"Taming Latent Diffusion Model for Neural Radiance Field Inpainting", Lin et al., ECCV 2024
(https://arxiv.org/abs/2404.09995). What this pipeline adds to nerfstudio's ``VanillaPipeline``:

- **Masked adversarial training** (inside the object mask, ``L^m = λ_adv L_adv + λ_fm L_fm``): the patches of the
  current batch (:mod:`~ns_diffusion_methods.methods.mald_nerf.datamanager`) are rendered by the NeRF ("fake") and
  read from the current inpainted images ("real"); in both, every pixel outside the object mask is set to black
  before a patch discriminator sees them. The NeRF gets the non-saturating loss and the discriminator
  feature-matching loss; the discriminator gets the logistic loss and a lazy R1 penalty on real patches (StyleGAN2:
  γ = 10 every 16 steps). The discriminator is owned here and trained by its own optimizer (param group
  ``discriminator`` in the method's ``optimizers``).

  nerfstudio's trainer takes one backward pass and one step of every optimizer per iteration, so both players are
  updated from the same iteration (simultaneous updates), with gradients kept apart: the NeRF's adversarial terms go
  through the discriminator with *detached* parameters, and the discriminator's terms see *detached* renders. Each
  optimizer therefore only ever receives the gradient of its own player's objective.
- **Scene customisation** (LDM inpainter only, ``--pipeline.inpainter.customize``): when training starts, the
  inpainting LDM is LoRA-fine-tuned on the training images with random rectangles, the loss zeroed on the object
  mask, with a scene token in the prompt. The result is cached on disk (keyed by the data and the base model) and
  reused; the loss curve is logged (``Customization/loss``).
- **Iterative dataset update**: when training starts, the training views are first inpainted from the captured
  images (an LDM starts from pure noise); then at steps U, 2U, ..., (K + 1) U (``update_every`` U, ``num_updates`` K)
  update ``k = 0, 1, ..., K`` renders each view (no gradients), noises it to ``t(k) = t_max - (t_max - t_min)
  sqrt(k / K)`` (so from ``t_max`` down to ``t_min``) and re-inpaints it by partial DDIM, conditioned on the masked
  captured image. Captured pixels outside the mask are kept exactly. Backends that ignore renders (OpenCV, the
  oracle) get no updates: they would repeat the first inpainting. The results are the datamanager's ``inpainted``
  :class:`~ns_diffusion_methods.dataset_updates.ImageStore` (checkpointed; restored by ``--load-dir``, which then does
  not inpaint again), logged as images, and shown on the training cameras in the viewer. With several GPUs each rank
  inpaints its share of the views and all ranks gather the results.

  The updates run between training iterations (:class:`~ns_diffusion_methods.engine.BetweenIterationsCallback`, an
  update due before step ``s`` runs right after iteration ``s - 1``), outside nerfstudio's iteration timer, so
  ``Train Iter (time)``, ``Train Rays / Sec`` and the ETA measure training alone; each update's duration is logged as
  ``Dataset update (s)``. The customisation and the first inpainting run when training starts, before iteration
  ``0``, also outside the timer, after one line saying what the run will and will not do.

- **Visibility-aware masks** (``--pipeline.visibility-aware-masks``, after 3DGIC's depth-guided cross-view
  consistency): much of what hides behind the object is seen, unmasked, by other training views. At
  ``visibility_step`` every training view's median depth is rendered and its object pixels whose surface point another
  view sees unmasked and unoccluded (:func:`~ns_diffusion_methods.geometry.visibility.seen_in_other_views`) leave the
  *inpainting mask*: the views that see them supervise them by reconstruction, the inpainter re-fills only the rest
  (with the rendered background in the seen part as context), and only the rest meets the masked adversarial loss,
  which waits for this step. The seen pixels are checkpointed with the inpainted images.

The diffusion model is built only for training (``test_mode == "val"``) and never stored in checkpoints.
Evaluation (``ns-eval``) adds masked PSNR, M-LPIPS (both published definitions) and FID/KID over the test views to
nerfacto's full-frame metrics (:mod:`~ns_diffusion_methods.methods.mald_nerf.evaluation`).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.distributed as dist
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.utils import comms, writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn
from torch.cuda.amp.grad_scaler import GradScaler

from ns_diffusion_methods.data.checks import require_object_free_views
from ns_diffusion_methods.dataset_updates import render_camera_outputs, run_sharded
from ns_diffusion_methods.diffusion.untrained import mark_untrained
from ns_diffusion_methods.engine.callbacks import BetweenIterationsCallback
from ns_diffusion_methods.engine.distributed import average_gradients_after_backward
from ns_diffusion_methods.engine.pipeline import DiffusionPipeline
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.gan import (
    PatchDiscriminator,
    PatchDiscriminatorConfig,
    d_logistic_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    lazy_r1_loss,
    mask_outside,
)
from ns_diffusion_methods.inpainters import AnnotatedInpainterUnion, Inpainter, LDMInpainterConfig, composite
from ns_diffusion_methods.methods.mald_nerf.datamanager import MaldNerfDataManager, MaldNerfDataManagerConfig
from ns_diffusion_methods.methods.mald_nerf.model import MaldNerfModel, MaldNerfModelConfig
from ns_diffusion_methods.methods.mald_nerf.schedule import idu_timestep, update_index, update_steps


@dataclass
class MaldNerfPipelineConfig(VanillaPipelineConfig):
    """MALD-NeRF: masked adversarial training, scene-customised inpainting LDM, iterative dataset update.

    No numeric hyper-parameter of the paper is public; the defaults come from the building blocks (StyleGAN2, LaMa,
    nerfiller, Zip-NeRF), as each flag says, and are all flags.
    """

    _target: Type = field(default_factory=lambda: MaldNerfPipeline)
    datamanager: MaldNerfDataManagerConfig = field(default_factory=MaldNerfDataManagerConfig)
    """Rays outside the mask plus patches overlapping it; the current inpainted images."""
    model: MaldNerfModelConfig = field(default_factory=MaldNerfModelConfig)
    """nerfacto with the reconstruction-region losses."""
    discriminator: PatchDiscriminatorConfig = field(default_factory=PatchDiscriminatorConfig)
    """Patch discriminator; its patch size is always the datamanager's mask-patch-size."""
    inpainter: AnnotatedInpainterUnion = field(default_factory=LDMInpainterConfig)
    """Inpainting backend: a subcommand after the other flags, followed by its own flags (e.g. pipeline.inpainter:ldm
    --pipeline.inpainter.model tiny)."""

    # masked adversarial training
    adversarial: bool = True
    """Train the inpainted region with the masked adversarial loss (False: ablation without it)."""
    adversarial_loss_mult: float = 0.05
    """λ_adv, weight of the NeRF's non-saturating adversarial loss (the paper does not say; recommended default, in
    the 0.01-0.1 range relative to the pixel loss)."""
    feature_matching_loss_mult: float = 1.0
    """λ_fm, weight of the discriminator feature-matching loss (the paper does not say; recommended default, in the
    1-10 range; LaMa weighs it 10x its adversarial loss)."""
    feature_matching_kind: Literal["l1", "l2"] = "l1"
    """Distance of the feature-matching loss: 'l1' (pix2pixHD) or 'l2' (LaMa)."""
    r1_gamma: float = 10.0
    """γ of the R1 penalty on real patches (StyleGAN2's value: 10)."""
    r1_every: int = 16
    """Lazy R1: apply it every this-many steps, scaled by the interval (StyleGAN2's value: 16)."""
    mask_discriminator_input: bool = True
    """Black out the pixels outside the object mask in real and fake patches (False: ablation, full patches)."""
    adversarial_start_step: int = 0
    """First step of the adversarial terms (before it, only the reconstruction losses train)."""
    inside_lpips_loss_mult: float = 0.0
    """Ablation: weight of an LPIPS loss between masked rendered and masked inpainted patches (the paper uses none
    inside the mask). Needs the LPIPS backbone weights."""

    # visibility-aware masks
    visibility_aware_masks: bool = False
    """Inpaint only what no training view sees (not in the paper; 3DGIC's depth-guided cross-view consistency): at
    `visibility-step`, object pixels whose background point (the run's median depth) another training view sees
    unmasked and unoccluded leave the inpainting mask; those views supervise them, the inpainter re-fills the rest
    with the rendered background as context, and only the rest meets the masked adversarial loss (which waits for
    this step). Off by default: it did not beat the plain masks in the method's evidence benchmark (README)."""
    visibility_step: int = 2000
    """Step at which the seen pixels are computed, once (the scene's geometry must have formed by then); they are
    kept in checkpoints."""
    visibility_depth_tolerance: float = 0.05
    """Relative depth agreement for a point to count as seen by another view (0.05: the other view's depth at the
    point's pixel is within 5 % of the point's distance from that camera)."""

    # iterative dataset update
    dataset_update: bool = True
    """Re-inpaint the training views from the current renders during training (False: ablation, only the first
    inpainting). Backends that ignore renders (opencv, oracle) get no updates: they would repeat the first
    inpainting."""
    update_every: int = 2500
    """U: training steps between dataset updates; the first is at step U (the paper does not say; recommended
    default in the 1000-2500 range, nerfiller's default is 1000)."""
    num_updates: int = 8
    """K of t(k) = t_max - (t_max - t_min) sqrt(k / K): the dataset updates are k = 0, 1, ..., K, i.e. K + 1 updates,
    at steps U, 2U, ..., (K + 1) U, from t_max down to t_min (the paper does not say; recommended default). 0 = one
    update, at t_max. Updates after the run's last step do not happen (the run says so when it starts)."""
    t_max: float = 0.98
    """Start noise level of the first update (k = 0), as a fraction of the LDM's T timesteps (recommended default;
    nerfiller anneals from 1.0)."""
    t_min: float = 0.3
    """Start noise level of the last update (k = K), as a fraction of T (recommended default in the 0.2-0.4 range;
    nerfiller anneals down to 0.4)."""
    update_seed: int = 0
    """Seed of the inpainting noise (per view and update, so results do not depend on the number of GPUs)."""
    num_logged_images: int = 4
    """Inpainted training views logged as images after every update (0 = none)."""

    def __post_init__(self) -> None:
        if self.visibility_step < 0 or self.visibility_depth_tolerance < 0:
            raise ValueError(f"`visibility_step` and `visibility_depth_tolerance` must be >= 0, but got "
                             f"{self.visibility_step} and {self.visibility_depth_tolerance}.")
        if self.r1_every < 1 or self.update_every < 1 or self.num_updates < 0:
            raise ValueError(f"`r1_every` and `update_every` must be >= 1 and `num_updates` >= 0, but got "
                             f"{self.r1_every}, {self.update_every} and {self.num_updates}.")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1 (fractions of T), but got t_min={self.t_min}, "
                             f"t_max={self.t_max}.")

    def pretrained_models(self) -> Dict[str, str]:
        """The pretrained-weight slots: flag -> model name (:mod:`ns_diffusion_methods.diffusion.untrained`); the
        inpainting backend names its own."""
        return self.inpainter.pretrained_models("--pipeline.inpainter")


def _log_learning_rate(optimizers: Any, group: str, step: int) -> None:
    """Log the learning rate of param group ``group`` as nerfstudio logs those of the groups with a scheduler."""
    writer.put_scalar(name=f"learning_rate/{group}", scalar=optimizers.optimizers[group].param_groups[0]["lr"],
                      step=step)


class MaldNerfPipeline(DiffusionPipeline):
    """See the module docstring."""

    config: MaldNerfPipelineConfig
    datamanager: MaldNerfDataManager
    _model: MaldNerfModel

    def __init__(self, config: MaldNerfPipelineConfig, device: str,
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 grad_scaler: Optional[GradScaler] = None) -> None:
        super().__init__(config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        config.discriminator.patch_size = config.datamanager.mask_patch_size
        self.discriminator: PatchDiscriminator = config.discriminator.setup().to(device)
        if world_size > 1:
            average_gradients_after_backward(self.discriminator, world_size)
        self._training_only: Dict[str, Any] = {}  # not registered: never in checkpoints
        self._trainer = None
        self._end_step: Optional[int] = None  # the first step this run does not train (set when training starts)
        self._local_rank = local_rank
        if test_mode == "val":  # the weights are loaded (and checked) here; customisation waits for training
            self._training_only["inpainter"] = config.inpainter.setup(device=device)

    # ---------------------------------------------------------------------------------------------------- setup
    @cached_property  # not a property: the viewer reads every property of the pipeline, cached ones excepted
    def inpainter(self) -> Inpainter:
        """The inpainter (training only)."""
        if "inpainter" not in self._training_only:
            raise RuntimeError("The inpainter is only built for training (test_mode 'val').")
        return self._training_only["inpainter"]

    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """The model's groups plus ``discriminator`` (its optimizer is in the method's ``optimizers``)."""
        groups = super().get_param_groups()
        groups["discriminator"] = list(self.discriminator.parameters())
        return groups

    def on_viewer_scene(self, viewer_state: Any) -> None:
        """Called after the viewer drew the training cameras (``ns-viewer --load-config``, a resumed ``ns-train``):
        once every view has been inpainted, their thumbnails show the inpainted images the run holds."""
        if bool((self.datamanager.inpainted.updates > 0).all()):
            from ns_diffusion_methods.methods.mald_nerf.viewer import show_training_images

            show_training_images(viewer_state, self.datamanager)

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> List[TrainingCallback]:
        """Start training (:meth:`start_training`: plan, customisation, first inpainting), then nerfacto's callbacks,
        the dataset updates between iterations and the discriminator's learning rate in the logs.

        nerfstudio calls this once its checkpoint (``--load-dir``) is loaded and before the first iteration.
        """
        self._trainer = training_callback_attributes.trainer
        trainer_config = getattr(self._trainer, "config", None)
        first = int(getattr(self._trainer, "_start_step", 0))
        # the steps this run trains: nerfstudio's range(start, start + max iterations)
        end = first + int(trainer_config.max_num_iterations) if trainer_config is not None else None
        self.start_training(first, end)
        callbacks = super().get_training_callbacks(training_callback_attributes)
        callbacks.append(BetweenIterationsCallback("Visibility", func=self.visibility_after_iteration))
        callbacks.append(BetweenIterationsCallback("Dataset update", func=self.update_after_iteration))
        optimizers = training_callback_attributes.optimizers
        if optimizers is not None and "discriminator" in optimizers.optimizers \
                and "discriminator" not in optimizers.schedulers:
            # nerfstudio logs learning_rate/GROUP for the groups with a scheduler only
            callbacks.append(TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                              func=_log_learning_rate, args=[optimizers, "discriminator"]))
        return callbacks

    # ---------------------------------------------------------------------------------------- training start
    def start_training(self, first_step: int = 0, end_step: Optional[int] = None) -> None:
        """Prepare the training of steps ``first_step .. end_step - 1`` (``end_step`` None: unknown); run once.

        Outside nerfstudio's iteration timer, before the first iteration: print the plan line (:meth:`plan`),
        customise the LDM on the scene (:meth:`customize_inpainter`), inpaint the training views for the first time
        unless a loaded checkpoint holds them, and run the dataset update due at ``first_step`` if the checkpoint
        was written before it (the final checkpoint of a run). Each piece logs its duration.
        """
        if self._training_only.get("started"):
            return
        self._training_only["started"] = True
        self._end_step = end_step
        if self.config.visibility_aware_masks:
            self.check_visibility_cameras()
        restored_visibility = self.datamanager.use_seen_masks()
        if comms.is_main_process():
            CONSOLE.print(self.plan(first_step, end_step), soft_wrap=True)
        timed = [("Customization (s)", self.customize_inpainter)]
        if not bool(self.datamanager.inpainted.filled.all()):
            timed.append(("First inpainting (s)", lambda: self.update_dataset(first_step, None)))
        if self.config.visibility_aware_masks and not restored_visibility and first_step >= self.config.visibility_step:
            timed.append(("Visibility (s)", lambda: self.compute_visibility(first_step)))
        elif self.config.dataset_update and self.inpainter.uses_diffusion:
            k = update_index(first_step, self.config.update_every, self.config.num_updates)
            if k is not None and int(self.datamanager.inpainted.last_step.min()) < first_step:
                timed.append(("Dataset update (s)", lambda: self.update_dataset(first_step, k)))
        for name, work in timed:
            started = time.perf_counter()
            if work() is not False and self._trainer is not None:  # logged in a training run only
                writer.put_scalar(name=name, scalar=time.perf_counter() - started, step=first_step)

    def customization_status(self) -> str:
        """What scene customisation does in this run, in words (for the plan line)."""
        config = self.config.inpainter
        if not (isinstance(config, LDMInpainterConfig) and self.inpainter.customizable):
            return f"not applicable (the {config.backend} inpainter has no weights to customise)"
        if self._training_only.get("customized"):
            return f"done ({config.lora_path})"
        if config.lora_path is not None:
            return f"none, the given LoRA {config.lora_path} is used"
        if not config.customize:
            return "off (--pipeline.inpainter.customize False)"
        from ns_diffusion_methods.inpainters.customization import cached_lora

        images, masks = self._customization_data()
        cached = cached_lora(images, masks, config, config.customization_cache_dir)
        if cached is not None:
            return f"the cached LoRA {cached} is reused"
        return f"a LoRA is trained now ({config.customization.steps} steps, then cached)"

    def _customization_data(self) -> Tuple[Tensor, Tensor]:
        """The training images ``[N, 3, H, W]`` and object masks ``[N, 1, H, W]`` (True = object, no loss there)."""
        dm = self.datamanager
        return dm.captured.permute(0, 3, 1, 2).contiguous(), dm.object_masks[:, None]

    def customize_inpainter(self) -> bool:
        """LoRA-customise the LDM inpainter on the scene if asked (cached; rank 0 first with several GPUs); returns
        whether anything ran. The loss curve is logged as ``Customization/loss``."""
        config = self.config.inpainter
        if not (isinstance(config, LDMInpainterConfig) and self.inpainter.customizable and config.customize
                and config.lora_path is None):
            return False
        from ns_diffusion_methods.inpainters.customization import customize

        images, masks = self._customization_data()
        world_size, local_rank = self.world_size, self._local_rank
        if world_size > 1 and local_rank != 0:
            dist.barrier()  # rank 0 customises and fills the cache; the others then load it

        def log_loss(step: int, loss: float) -> None:
            writer.put_scalar(name="Customization/loss", scalar=loss, step=step)

        # the adapter is trained into (or loaded from the cache into) this inpainter in place
        folder = customize(images, masks, config, config.customization_cache_dir, device=self.device,
                           inpainter=self.inpainter, console=CONSOLE,
                           on_step=log_loss if self._trainer is not None else None)
        if world_size > 1 and local_rank == 0:
            dist.barrier()
        if folder is not None:
            config.lora_path = folder
            self._training_only["customized"] = True
        return True

    def missed_updates(self, first_step: int, end_step: int) -> List[int]:
        """The steps of the dataset updates that come at or after ``end_step`` (the run ends before them)."""
        return [s for s in update_steps(self.config.update_every, self.config.num_updates) if s >= end_step]

    def plan(self, first_step: int = 0, end_step: Optional[int] = None) -> str:
        """One line on what training steps ``first_step .. end_step - 1`` will do: the inpainter, the scene
        customisation, the first inpainting and the dataset updates (or why there are none)."""
        inpainter, config = self.inpainter, self.config
        store = self.datamanager.inpainted
        if bool(store.filled.all()):
            first = "restored from the checkpoint"
        else:
            first = f"{inpainter.first_inpainting}, before step {first_step}"
        parts = [f"inpainter {config.inpainter.summary()}",
                 f"scene customisation: {self.customization_status()}",
                 f"first inpainting: {first}",
                 f"dataset updates: {self._updates_plan(first_step, end_step)}",
                 f"visibility-aware masks: {self._visibility_plan(end_step)}"]
        return "MALD-NeRF plan: " + "; ".join(parts) + "."

    def _visibility_plan(self, end_step: Optional[int]) -> str:
        config = self.config
        if not config.visibility_aware_masks:
            return "off"
        if bool(self.datamanager.seen.filled.all()):
            return "restored from the checkpoint"
        text = (f"the pixels other views see are computed at step {config.visibility_step}, then only the rest is "
                f"inpainted and meets the adversarial loss (which waits for it)")
        if end_step is not None and config.visibility_step >= end_step:
            text += (f"; step {config.visibility_step} comes after the last training step {end_step - 1}: lower "
                     f"--pipeline.visibility-step")
        return text

    def _updates_plan(self, first_step: int, end_step: Optional[int]) -> str:
        config = self.config
        if not config.dataset_update:
            return "none (--pipeline.dataset-update False)"
        if not self.inpainter.uses_diffusion:
            return (f"none (the {config.inpainter.backend} inpainter does not start from renders: an update would "
                    f"repeat the first inpainting)")
        steps = update_steps(config.update_every, config.num_updates)
        done = int(self.datamanager.inpainted.last_step.min()) if bool(self.datamanager.inpainted.filled.all()) else -1
        end = end_step if end_step is not None else steps[-1] + 1
        planned = [s for s in steps if max(first_step, done + 1) <= s < end]
        missed = self.missed_updates(first_step, end)
        if planned:
            times = [self.start_timestep(update_index(s, config.update_every, config.num_updates)) for s in planned]
            text = (f"{len(planned)} at step{'s' if len(planned) > 1 else ''} {', '.join(map(str, planned))} "
                    f"(re-inpainting from renders noised to t = {', '.join(map(str, times))} of T = "
                    f"{self.inpainter.num_train_timesteps})")
        else:
            text = "none left" if not missed else "none"
        if missed:
            text += (f"; {len(missed)} of the {len(steps)} dataset updates (steps {', '.join(map(str, steps))}) come "
                     f"after the last training step {end - 1} and will not happen: raise --max-num-iterations or "
                     f"lower --pipeline.update-every / --pipeline.num-updates")
        return text

    # ---------------------------------------------------------------------------------------- visibility
    def check_visibility_cameras(self) -> None:
        """Refuse visibility-aware masks for cameras the pinhole projection does not model, before training."""
        from nerfstudio.cameras.cameras import CameraType

        cameras = self.datamanager.train_dataset.cameras
        kinds = set(int(v) for v in cameras.camera_type.flatten().tolist())
        if kinds != {CameraType.PERSPECTIVE.value}:
            names = sorted(CameraType(v).name for v in kinds)
            raise DataError(f"--pipeline.visibility-aware-masks projects points with a pinhole model, but the capture "
                            f"{self.datamanager.get_datapath()} has {', '.join(names)} cameras: turn it off "
                            f"(--pipeline.visibility-aware-masks False) or undistort the capture to perspective "
                            f"images.")

    def visibility_ready(self) -> bool:
        """Whether the inpainting masks are final: always without visibility-aware masks, else once computed."""
        return not self.config.visibility_aware_masks or bool(self.datamanager.seen.filled.all())

    def visibility_after_iteration(self, step: int) -> bool:
        """Compute the seen pixels when they are due before step ``step + 1``; returns whether that ran."""
        if self.visibility_ready() or step + 1 < self.config.visibility_step:
            return False
        if self._end_step is not None and step + 1 >= self._end_step:
            return False
        self.compute_visibility(step + 1)
        return True

    @torch.no_grad()
    def compute_visibility(self, step: int) -> None:
        """Render every training view's median depth, find the object pixels other views see
        (:func:`~ns_diffusion_methods.geometry.visibility.seen_in_other_views`), keep them in the datamanager and
        re-inpaint the views with the smaller masks (the rendered background as context in the seen part)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from ns_diffusion_methods.geometry.visibility import seen_in_other_views, surface_points_of

        dm = self.datamanager
        cameras = dm.train_dataset.cameras
        indices = list(range(dm.num_train_images))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=CONSOLE,
                      transient=True) as progress:
            task = progress.add_task("Visibility-aware masks: rendering the training views' depth", total=len(indices))

            def work(index: int) -> Tensor:
                depth = render_camera_outputs(self.model, cameras[index:index + 1].to(self.device), ("depth",))
                progress.advance(task)
                return depth["depth"][..., 0].float().cpu()

            depths = run_sharded(indices, work)
        masks = dm.object_masks.cpu()
        hole_points = []  # only the object pixels' rays are kept
        for index in indices:
            rays = cameras.generate_rays(camera_indices=index, keep_shape=True)
            hole_points.append(surface_points_of(rays.origins.cpu().float(), rays.directions.cpu().float(),
                                                 depths[index], masks[index]))
        intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).float()
        seen = seen_in_other_views(hole_points, torch.stack([depths[i] for i in indices]), masks,
                                   cameras.camera_to_worlds.float(), intrinsics,
                                   tolerance=self.config.visibility_depth_tolerance)
        dm.set_seen_masks(seen, step)
        fraction = float(seen.sum()) / max(int(masks.sum()), 1)
        if self._trainer is not None:
            writer.put_scalar(name="Visibility/seen fraction of the object pixels", scalar=fraction, step=step)
        CONSOLE.print(f"[green]Visibility-aware masks (step {step}): {100 * fraction:.0f} % of the object pixels are "
                      f"seen by other training views; only the other {100 * (1 - fraction):.0f} % are inpainted and "
                      f"meet the adversarial loss.[/green]")
        self.update_dataset(step, None, what=f"Re-inpainting what no other view sees "
                                              f"({self.inpainter.first_inpainting})")

    # ---------------------------------------------------------------------------------------- dataset update
    def update_after_iteration(self, step: int) -> bool:
        """Run the dataset update due before step ``step + 1`` (the :class:`BetweenIterationsCallback` after the
        iteration of ``step``); returns whether one ran. Nothing is due past the run's last step."""
        if self._end_step is not None and step + 1 >= self._end_step:
            return False
        return self.maybe_update_dataset(step + 1)

    def maybe_update_dataset(self, step: int) -> bool:
        """Do what is due before step ``step``: the first inpainting if the store is empty (a pipeline used without
        :meth:`start_training`), else update ``k`` at step ``(k + 1) U``, k <= K. Returns whether anything ran.

        Backends that ignore renders get no updates (the plan line says so when training starts).
        """
        if not bool(self.datamanager.inpainted.filled.all()):
            self.update_dataset(step, None)
            return True
        if not (self.config.dataset_update and self.inpainter.uses_diffusion):
            return False
        k = update_index(step, self.config.update_every, self.config.num_updates)
        if k is None:
            return False
        self.update_dataset(step, k)
        return True

    def start_timestep(self, k: Optional[int]) -> Optional[int]:
        """None (pure noise) for the first inpainting (``k = None``), else ``t(k)`` in the inpainter's timesteps."""
        if k is None:
            return None
        return idu_timestep(k, self.config.num_updates, self.config.t_max, self.config.t_min,
                            self.inpainter.num_train_timesteps)

    @torch.no_grad()
    def inpaint_view(self, index: int, k: Optional[int]) -> Tensor:
        """Inpaint training view ``index`` for update ``k``: ``[H, W, 3]`` on the CPU, captured pixels kept outside.

        ``k = None`` (the first inpainting) inpaints the captured image from pure noise; update ``k = 0 .. K``
        starts from the current render noised to ``t(k)`` (partial DDIM), conditioned on the masked captured image.
        """
        dm = self.datamanager
        device = self.device
        captured = dm.captured_image(index).to(device).permute(2, 0, 1)[None]  # [1, 3, H, W]
        mask = dm.inpaint_mask(index).to(device)[None, None]  # [1, 1, H, W]
        seen = dm.seen_mask(index)
        start = self.start_timestep(k)
        source = None
        if start is not None or seen is not None:
            camera = dm.train_dataset.cameras[index:index + 1].to(device)
            rgb = render_camera_outputs(self.model, camera, ("rgb",))["rgb"]  # [H, W, 3], eval mode, chunked
            source = rgb.clamp(0, 1).permute(2, 0, 1)[None]
            if seen is not None:  # the background other views see, as rendered, is context for the inpainter
                captured = torch.where(seen.to(device)[None, None], source, captured)
            if start is None:
                source = None
        if not bool(mask.any()):  # other views see all of this view's object region
            return captured[0].permute(1, 2, 0).float().cpu()
        seed = zlib.crc32(f"{self.config.update_seed}-{k}-{index}".encode())
        generator = torch.Generator().manual_seed(seed)
        filled = self.inpainter.inpaint(captured, mask, start_timestep=start, source=source, generator=generator)
        filled = composite(captured, filled.to(captured), mask)  # the captured pixels, exactly, outside the mask
        return filled[0].permute(1, 2, 0).float().cpu()

    def update_dataset(self, step: int, k: Optional[int], what: Optional[str] = None) -> None:
        """Inpaint every training view for update ``k`` (None: the first inpainting; sharded over ranks) and store
        the results; ``what`` names the work in the progress bar and the log line."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        dm = self.datamanager
        indices = list(range(dm.num_train_images))
        start = self.start_timestep(k)
        if what is None:
            what = (f"First inpainting of the training views ({self.inpainter.first_inpainting})" if start is None
                    else f"Dataset update {k + 1}/{self.config.num_updates + 1} (k = {k}): re-inpainting from renders "
                         f"at t={start}")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=CONSOLE, transient=True) as progress:
            task = progress.add_task(what, total=len(indices))

            def work(index: int) -> Tensor:
                result = self.inpaint_view(index, k)
                progress.advance(task)
                return result

            results = run_sharded(indices, work)
        for index in indices:
            dm.set_inpainted(index, results[index], step)
        CONSOLE.print(f"[green]{what}: {len(indices)} views done (step {step}).[/green]")
        self._publish_inpainted(step)

    def _publish_inpainted(self, step: int) -> None:
        """Log a few inpainted views as images and show all of them on the viewer's training cameras."""
        dm = self.datamanager
        count = min(self.config.num_logged_images, dm.num_train_images)
        if count > 0:
            picks = torch.linspace(0, dm.num_train_images - 1, count).round().long().tolist()
            row = torch.cat([dm.inpainted.get(i) for i in picks], dim=1)  # [H, count * W, 3]
            writer.put_image(name="Dataset update/inpainted training views", image=row, step=step)
        trainer = self._trainer
        viewer_state = getattr(trainer, "viewer_state", None) if trainer is not None else None
        if viewer_state is not None:
            from ns_diffusion_methods.methods.mald_nerf.viewer import show_training_images

            show_training_images(viewer_state, dm)

    # ------------------------------------------------------------------------------------------------ training
    def get_train_loss_dict(self, step: int) -> Tuple[Dict, Dict, Dict]:
        """Reconstruction losses (model), then the inpainting-region terms on the batch's patches."""
        ray_bundle, batch = self.datamanager.next_train(step)
        outputs = self._model(ray_bundle)
        metrics_dict = self.model.get_metrics_dict(outputs, batch)
        loss_dict = self.model.get_loss_dict(outputs, batch, metrics_dict)
        if self.config.adversarial and step >= self.config.adversarial_start_step and self.visibility_ready() \
                and batch["patch_corners"].shape[0] > 0:
            loss_dict.update(self.adversarial_losses(outputs, batch, step, metrics_dict))
        if self.config.inside_lpips_loss_mult > 0 and batch["patch_corners"].shape[0] > 0:
            loss_dict["inside_lpips_loss"] = self.config.inside_lpips_loss_mult * self.inside_lpips(outputs, batch)
        return outputs, loss_dict, metrics_dict

    def patches(self, outputs: Dict[str, Tensor], batch: Dict) -> Tuple[Tensor, Tensor, Tensor]:
        """The batch's patches ``[K, 3, P, P]``: rendered (with gradient), inpainted, and the inpainting mask (bool;
        the object mask unless visibility-aware masks took the seen pixels out)."""
        size, offset = int(batch["patch_size"]), int(batch["num_single_rays"])
        count = batch["patch_corners"].shape[0]

        def to_patches(values: Tensor) -> Tensor:  # [K*P*P, C] -> [K, C, P, P]
            return values[offset:].reshape(count, size, size, -1).permute(0, 3, 1, 2)

        fake = to_patches(outputs["rgb"]).float()
        real = to_patches(batch["inpainted"].to(self.device)).float()
        mask = to_patches(batch.get("inpaint_mask", batch["object_mask"]).to(self.device)).bool()
        return fake, real, mask

    def discriminator_inputs(self, outputs: Dict[str, Tensor], batch: Dict) -> Tuple[Tensor, Tensor]:
        """Real and fake discriminator inputs ``[K, 3, P, P]``: black outside the object mask unless ablated."""
        fake, real, mask = self.patches(outputs, batch)
        if self.config.mask_discriminator_input:
            return mask_outside(real, mask), mask_outside(fake, mask)
        return real, fake

    def adversarial_losses(self, outputs: Dict[str, Tensor], batch: Dict, step: int,
                           metrics_dict: Dict[str, Any]) -> Dict[str, Tensor]:
        """The NeRF's adversarial and feature-matching losses, and the discriminator's logistic and R1 losses."""
        real, fake = self.discriminator_inputs(outputs, batch)
        disc = self.discriminator
        with torch.autocast(device_type=real.device.type, enabled=False):
            # NeRF side: the discriminator's parameters are detached, so these terms only train the NeRF
            frozen = {name: p.detach() for name, p in disc.named_parameters()}
            fake_logits_g, fake_feats = torch.func.functional_call(disc, frozen, (fake,))
            # discriminator side: the renders are detached, so these terms only train the discriminator
            real_logits, real_feats = disc(real)
            fake_logits_d, _ = disc(fake.detach())
            losses = {
                "adversarial_loss": self.config.adversarial_loss_mult * g_nonsaturating_loss(fake_logits_g),
                "feature_matching_loss": self.config.feature_matching_loss_mult * feature_matching_loss(
                    real_feats, fake_feats, kind=self.config.feature_matching_kind),
                "discriminator_loss": d_logistic_loss(real_logits, fake_logits_d),
            }
            if step % self.config.r1_every == 0:
                losses["r1_loss"] = lazy_r1_loss(disc, real, self.config.r1_gamma, self.config.r1_every)
        metrics_dict["discriminator_real_logit"] = real_logits.detach().mean()
        metrics_dict["discriminator_fake_logit"] = fake_logits_d.detach().mean()
        return losses

    def inside_lpips(self, outputs: Dict[str, Tensor], batch: Dict) -> Tensor:
        """Ablation: LPIPS between the masked rendered and the masked inpainted patches."""
        if "lpips" not in self._training_only:
            from ns_diffusion_methods.metrics.lpips import lpips_metric

            metric = lpips_metric(normalize=True)
            if not getattr(metric, "available", True):
                from ns_diffusion_methods.errors import ModelUnavailableError

                raise ModelUnavailableError(
                    f"--pipeline.inside-lpips-loss-mult needs the LPIPS backbone weights: {metric.reason}")
            self._training_only["lpips"] = metric.to(self.device)
        fake, real, mask = self.patches(outputs, batch)
        metric = self._training_only["lpips"]
        return metric(mask_outside(fake, mask).clamp(0, 1), mask_outside(real, mask))

    # -------------------------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False) -> Dict[str, Any]:
        """ns-eval's metrics over every test view: full-frame, masked, and set-level FID/KID.

        The test views are the capture's object-free views; a capture without any (every frame shows the object)
        stops here with a :class:`~ns_diffusion_methods.errors.DataError` saying how to add them, before anything is
        rendered. Called without ``step`` (by ns-eval), the results also name the run's untrained models, if any.
        """
        from ns_diffusion_methods.methods.mald_nerf.evaluation import evaluate_test_views

        require_object_free_views(self.datamanager.eval_dataset, self.datamanager.get_datapath())
        self.eval()
        try:
            results = evaluate_test_views(self, output_path=output_path, get_std=get_std)
        finally:
            self.train()
        return results if step is not None else mark_untrained(results, self.config)
