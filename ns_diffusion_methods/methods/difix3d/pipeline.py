"""The difix3d pipeline: progressive pseudo views fixed by Difix, mixed into training (Difix3D, CVPR 2025).

One pipeline serves both backbones (the datamanager and model configs pick nerfacto or splatfacto):

1. At construction (training only), one pseudo camera per target is placed at the training camera nearest it; the
   targets are the evaluation cameras or a viewer camera path (``--pipeline.target-cameras``). The fixer (a backend of
   :data:`~ns_diffusion_methods.fixers.configs.AnnotatedFixerUnion`: ``pipeline.fixer:difix``, ``:identity`` or
   ``:oracle``) is loaded here, once, and only for training (``test_mode == "val"``); evaluation and rendering load it
   lazily, and only if ``rgb_fixed`` is requested.
2. When training starts (after ``--load-dir`` is loaded) the first round's step is fixed (``fix_start_step``; by
   default the first step after a trained nerfacto/splatfacto checkpoint, else once the base has trained:
   :func:`from_scratch_fix_start_step`). A callback runs after every step, between iterations (outside nerfstudio's
   iteration timer: :class:`~ns_diffusion_methods.engine.callbacks.BetweenIterationsCallback`); from that step on,
   every ``steps_per_fix`` steps it moves each pseudo camera one step toward its target, renders it without gradients,
   fixes the render with its nearest training image as reference, and replaces that camera's pseudo view
   (:func:`~ns_diffusion_methods.dataset_updates.pseudo_views.run_fix_round`).
   At the first round the learning rates are lowered by ``fix_phase_lr_mults`` and the model's fix phase begins
   (splats stop densifying). Rounds are logged as images and scalars and drawn as frustums in the viewer.
3. Each training step draws a pseudo batch with probability ``pseudo_probability`` (once pseudo views exist), else a
   real one; their losses are scaled by ``pseudo_loss_mult`` and ``real_loss_mult``. Pseudo pixels whose render
   accumulation (alpha) was below ``min_pseudo_accumulation`` are not supervised.

The pseudo views are registered buffers of the pipeline (``pseudo_views.*`` in checkpoints), so ``--load-dir`` resumes
with them. A ``nerfacto``/``splatfacto`` checkpoint also loads (the models have the same parameters and optimizer
groups); it simply has no pseudo views yet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.utils import writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch.cuda.amp.grad_scaler import GradScaler

from ns_diffusion_methods.compat import enable_for_package_runs
from ns_diffusion_methods.data.checks import check_nerfstudio_capture, require_evaluation_images
from ns_diffusion_methods.dataset_updates.pseudo_views import (
    ProgressiveSchedule,
    PseudoViews,
    load_camera_path,
    log_pseudo_views,
    pseudo_view_stats,
    run_fix_round,
    show_in_viewer,
    subsample_cameras,
)
from ns_diffusion_methods.engine.callbacks import BetweenIterationsCallback
from ns_diffusion_methods.engine.pipeline import DiffusionPipeline
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.configs import AnnotatedFixerUnion
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
from ns_diffusion_methods.methods.difix3d.datamanager import Difix3DNerfactoDataManagerConfig
from ns_diffusion_methods.methods.difix3d.fixing import (
    FixerHandle,
    ReferenceViews,
    RenderFixer,
    TrainingImageReader,
    scale_learning_rates,
)
from ns_diffusion_methods.methods.difix3d.model import Difix3DNerfactoModelConfig

#: the flag that names the fixer's weights (the pretrained-weight slot of untrained-model marking)
FIXER_FLAG = "--pipeline.fixer.model"
#: how to set it on the command line (named in error messages about the weights)
FIXER_FLAG_USAGE = "pipeline.fixer:difix --pipeline.fixer.model"


@dataclass
class Difix3DPipelineConfig(VanillaPipelineConfig):
    """Difix3D's progressive 3D update around a nerfacto or splatfacto model (see the module docstring)."""

    _target: Type = field(default_factory=lambda: Difix3DPipeline)
    datamanager: DataManagerConfig = field(default_factory=Difix3DNerfactoDataManagerConfig)
    """The datamanager (nerfacto: a VanillaDataManager; splat: a FullImageDatamanager)."""
    model: ModelConfig = field(default_factory=Difix3DNerfactoModelConfig)
    """The model (difix3d nerfacto or splatfacto)."""
    fixer: AnnotatedFixerUnion = field(default_factory=DifixFixerConfig)
    """The fixer repairing pseudo views and renders: `pipeline.fixer:difix` (weights with --pipeline.fixer.model:
    nvidia/difix_ref, nvidia/difix, a local folder, or tiny), `pipeline.fixer:identity` (no fixing, the ablation
    baseline) or `pipeline.fixer:oracle` (a synthetic capture's ground truth). Give it after the other flags."""
    target_cameras: Optional[Path] = None
    """Camera path JSON written by the viewer's render panel: the pseudo cameras walk toward its cameras. None = the
    evaluation cameras (held-out views)."""
    max_targets: Optional[int] = None
    """Use at most this many targets, evenly spaced (one pseudo view each). None = all."""
    steps_per_fix: int = 1500
    """Steps between pseudo-view rounds (paper: 1500; official code: 2000)."""
    fix_start_step: Optional[int] = None
    """First step at which a round may happen (rounds at steps s >= this with (s - this) % steps_per_fix == 0). None =
    derived when training starts (printed: "fixing starts at step N"): from a nerfacto/splatfacto checkpoint
    (--load-dir, the paper's protocol) at the first step of the run; from scratch once the base reconstruction has
    trained: half of --max-num-iterations, for splats not before densification ends (--pipeline.model.stop-split-at,
    unless densify-during-fixing), rounded up to a multiple of steps_per_fix; resuming a difix3d run keeps its
    schedule."""
    step_size: float = 0.5
    """Pose step per round in normalised scene units (+ radians of rotation); the official step is 0.5."""
    pseudo_probability: float = 0.4
    """Probability that a training step uses a pseudo view instead of a real one (official: 0.4 nerfacto, 0.3
    gsplat)."""
    pseudo_loss_mult: float = 1.0
    """Multiplier of every loss term of a pseudo batch (official gsplat example: 0.3)."""
    real_loss_mult: float = 1.0
    """Multiplier of every loss term of a real batch (official gsplat example: 1.5)."""
    min_pseudo_accumulation: float = 0.5
    """Pseudo pixels whose render accumulation (alpha) was below this when fixed are not supervised."""
    fix_batch_size: int = 4
    """Pseudo views per fixer call."""
    fix_phase_lr_mults: Dict[str, float] = field(default_factory=dict)
    """Learning-rate multipliers per param group applied at the first round (official gsplat example: means 0.1,
    scales/quats/opacities 0.2, SH 0.02)."""
    logged_pseudo_views: int = 8
    """How many pseudo views (render | fixed) to log as images each round (0 = none)."""
    show_pseudo_views: bool = True
    """Draw the pseudo cameras as frustums in the viewer."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.pseudo_probability <= 1.0:
            raise ValueError(f"`pseudo_probability` must be in [0, 1], but is {self.pseudo_probability}.")
        if self.fix_batch_size < 1:
            raise ValueError(f"`fix_batch_size` must be >= 1, but is {self.fix_batch_size}.")
        if self.max_targets is not None and self.max_targets < 1:
            raise ValueError(f"`max_targets` must be >= 1 or None, but is {self.max_targets}.")
        if self.fix_start_step is not None and self.fix_start_step < 0:
            raise ValueError(f"`fix_start_step` must be >= 0 or None, but is {self.fix_start_step}. Set "
                             f"--pipeline.fix-start-step.")

    def pretrained_models(self) -> Dict[str, str]:
        """The pretrained-weight slots: flag -> model name (:mod:`ns_diffusion_methods.diffusion.untrained`)."""
        weights = self.fixer.weights()
        return {} if weights is None else {FIXER_FLAG: weights}


def round_up(step: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``step``."""
    return -(-step // multiple) * multiple


def densification_end(model: Any) -> Optional[int]:
    """The step a model config's densification ends at when the first round does not end it earlier: splatfacto's
    ``stop_split_at`` (unless ``densify_during_fixing``); None for models that do not densify (nerfacto)."""
    if not hasattr(model, "stop_split_at") or getattr(model, "densify_during_fixing", False):
        return None
    return int(model.stop_split_at)


def from_scratch_fix_start_step(max_num_iterations: int, steps_per_fix: int,
                                densification_end: Optional[int] = None) -> Tuple[int, str]:
    """Where fixing starts in a run that trains its base reconstruction itself (no checkpoint loaded).

    Half of the run (rounded up, so never step 0) trains the base, as the paper trains nerfacto/splatfacto for 30k
    steps and then fixes for 30k. A model whose densification ends with the first round (splats) must also have
    finished densifying, or it would never densify. The step is rounded up to a multiple of ``steps_per_fix``.

    Args:
        max_num_iterations: the run's ``--max-num-iterations``.
        steps_per_fix: steps between rounds.
        densification_end: the step densification ends at (splatfacto's ``stop_split_at``), or None when the model
            does not densify or keeps densifying while fixing.

    Returns:
        The step, and the reason in words (for the message at the start of training).
    """
    half = round_up(max_num_iterations, 2) // 2
    if densification_end is not None and densification_end > half:
        return round_up(densification_end, steps_per_fix), (
            f"training from scratch: after densification ends at step {densification_end} "
            f"(--pipeline.model.stop-split-at), rounded up to a multiple of steps_per_fix = {steps_per_fix}")
    return round_up(half, steps_per_fix), (
        f"training from scratch: half of --max-num-iterations {max_num_iterations} trains the base reconstruction, "
        f"rounded up to a multiple of steps_per_fix = {steps_per_fix}")


def check_capture(parser: Any, data: Optional[Path]) -> None:
    """The up-front check of a capture (:func:`~ns_diffusion_methods.data.checks.check_nerfstudio_capture`:
    ``transforms.json`` and every image nerfstudio will load), for the dataparsers it understands: ``nerfstudio-data``
    and its subclasses. Other dataparsers (colmap, blender-data, ...) are left to nerfstudio.

    Args:
        parser: the datamanager's dataparser config.
        data: the datamanager's ``data`` (``--data``), which overrides the dataparser's.
    """
    if not isinstance(parser, NerfstudioDataParserConfig):
        return
    data = Path(data or parser.data)
    check_nerfstudio_capture(data, parser=dataclasses.replace(parser, data=data).setup())


class Difix3DPipeline(DiffusionPipeline):
    """``VanillaPipeline`` with progressive pseudo views and render-time fixing (see the module docstring).

    Args:
        config: :class:`Difix3DPipelineConfig`.
        device, test_mode, world_size, local_rank, grad_scaler: as ``VanillaPipeline``.
    """

    config: Difix3DPipelineConfig

    def __init__(self, config: Difix3DPipelineConfig, device: str,
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 grad_scaler: Optional[GradScaler] = None) -> None:
        enable_for_package_runs()  # the capture check below may already raise a user error
        if test_mode != "inference":
            check_capture(config.datamanager.dataparser, config.datamanager.data)
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        # the start step is final once training knows whether it resumed a checkpoint (resolve_fix_start_step)
        self.schedule = ProgressiveSchedule(steps_per_fix=config.steps_per_fix, start_step=config.fix_start_step or 0,
                                            step_size=config.step_size)
        self.fix_start_step: Optional[int] = config.fix_start_step
        #: (step, whether it held pseudo views) of the checkpoint loaded into this pipeline, if any
        self._loaded_checkpoint: Optional[Tuple[int, bool]] = None
        train_dataset = self.datamanager.train_dataset
        assert train_dataset is not None
        cameras = train_dataset.cameras
        self.training_poses = cameras.camera_to_worlds.detach().float().cpu()  # [N, 3, 4]
        if test_mode == "val":
            intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).float()
            sizes = torch.cat([cameras.height, cameras.width], dim=-1).long()
            self.pseudo_views = self.schedule.initialize_state(self.training_poses, intrinsics, sizes,
                                                               self._target_poses())
        else:
            self.pseudo_views = PseudoViews.empty()  # filled by loading the checkpoint
        self.pseudo_views.to(device)

        outputs = self.datamanager.train_dataparser_outputs  # type: ignore[attr-defined]
        self.fixer_context: Dict[str, Any] = {"dataparser_transform": outputs.dataparser_transform,
                                              "dataparser_scale": float(outputs.dataparser_scale)}
        self.fixer_handle = FixerHandle(config.fixer, device, flag=FIXER_FLAG_USAGE)
        if test_mode == "inference":  # ns-render: nerfstudio's datamanager names full-size images here
            load_reference = TrainingImageReader(config.datamanager.dataparser, len(train_dataset),
                                                 train_dataset.scale_factor)
        else:
            load_reference = train_dataset.get_image_float32
        self.references = ReferenceViews(self.training_poses, load_reference)
        set_render_fixer = getattr(self.model, "set_render_fixer", None)
        if set_render_fixer is not None:
            set_render_fixer(RenderFixer(self.fixer_handle, self.references, self.fixer_context))
        if test_mode == "val":
            self.fixer_handle.load()  # once, for training only; never in checkpoints (not an nn.Module)
        self._fix_phase_started = False

    @torch.no_grad()
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False) -> Dict[str, Any]:
        """nerfstudio's metrics over every evaluation view (``rgb``, and ``rgb_fixed`` from the model).

        Called without ``step`` (by ns-eval), the results also name the run's untrained models, if any.
        """
        require_evaluation_images(self.datamanager.eval_dataset, self.datamanager.get_datapath())
        return super().get_average_eval_image_metrics(step=step, output_path=output_path, get_std=get_std)

    def _target_poses(self) -> torch.Tensor:
        """The c2w poses [M, 3, 4] the pseudo cameras walk toward."""
        if self.config.target_cameras is not None:
            targets = load_camera_path(self.config.target_cameras, self.config.max_targets)
        else:
            eval_dataset = self.datamanager.eval_dataset
            if eval_dataset is None or len(eval_dataset) == 0:
                raise DataError("difix3d needs target views: the capture has no evaluation images. Give a camera "
                                "path written by the viewer with --pipeline.target-cameras PATH, or a capture with "
                                "an evaluation split (e.g. nerfstudio-data --eval-mode filename).")
            targets = subsample_cameras(eval_dataset.cameras, self.config.max_targets)
        return targets.camera_to_worlds.detach().float().cpu()

    # -------------------------------------------------------------------------------------------------------------
    # training

    def get_train_loss_dict(self, step: int):
        """A pseudo batch with probability ``pseudo_probability`` (once pseudo views exist), else a real batch."""
        pseudo = None
        if self.pseudo_views.has_images and float(torch.rand(())) < self.config.pseudo_probability:
            pseudo = self.datamanager.next_pseudo_train(  # type: ignore[attr-defined]
                step, self.pseudo_views, self.config.min_pseudo_accumulation)
        if pseudo is not None:
            ray_bundle, batch = pseudo
            multiplier = self.config.pseudo_loss_mult
        else:
            ray_bundle, batch = self.datamanager.next_train(step)
            multiplier = self.config.real_loss_mult
        model_outputs = self._model(ray_bundle)  # through DDP when wrapped
        metrics_dict = self.model.get_metrics_dict(model_outputs, batch)
        loss_dict = self.model.get_loss_dict(model_outputs, batch, metrics_dict)
        if multiplier != 1.0:
            loss_dict = {name: value * multiplier for name, value in loss_dict.items()}
        metrics_dict["pseudo_batch"] = torch.tensor(float(pseudo is not None))
        return model_outputs, loss_dict, metrics_dict

    def on_viewer_scene(self, viewer_state: Any) -> None:
        """Called after the viewer drew its scene (``ns-viewer --load-config``, a resumed ``ns-train``): draw the
        pseudo views the run holds, as a training round does."""
        if self.config.show_pseudo_views and len(self.pseudo_views):
            show_in_viewer(viewer_state, self.pseudo_views)

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        """Load a checkpoint (nerfstudio's), noting its step and whether it is a difix3d run's (pseudo views)."""
        self._loaded_checkpoint = (int(step), any(key.startswith("pseudo_views.") for key in loaded_state))
        super().load_pipeline(loaded_state, step)

    def resolve_fix_start_step(self, max_num_iterations: int) -> int:
        """Fix the step the first round may happen at, and say where and why (see ``fix_start_step``).

        Called when training starts, after nerfstudio loaded ``--load-dir``/``--load-checkpoint`` (if any).

        Args:
            max_num_iterations: the trainer's ``--max-num-iterations`` (steps this run trains).
        """
        steps_per_fix = self.config.steps_per_fix
        loaded = self._loaded_checkpoint
        first_step = 0 if loaded is None else loaded[0] + 1
        rounds = int(self.pseudo_views.rounds) if len(self.pseudo_views) else 0
        if self.config.fix_start_step is not None:
            start, reason = self.config.fix_start_step, "set by --pipeline.fix-start-step"
        elif loaded is not None and loaded[1] and rounds > 0:
            start = int(self.pseudo_views.last_round_step)
            reason = (f"resuming a difix3d run: its last round was at step {start}, the next one {steps_per_fix} "
                      f"steps later")
        elif loaded is not None and not loaded[1]:
            start = first_step
            reason = (f"the first step of this run: the loaded checkpoint (step {loaded[0]}) has no pseudo views, a "
                      f"trained nerfacto/splatfacto as in the paper's protocol")
        else:  # from scratch, or resuming a difix3d run that had not reached its first round
            start, reason = from_scratch_fix_start_step(max_num_iterations, steps_per_fix,
                                                        densification_end(self.config.model))
            if loaded is not None:
                reason = f"resuming a difix3d run that had not started fixing, {reason}"
        self.fix_start_step = start
        self.schedule = dataclasses.replace(self.schedule, start_step=start)
        last_step = first_step + max_num_iterations - 1
        next_round = start if start >= first_step else first_step + (start - first_step) % steps_per_fix
        if next_round > last_step:
            CONSOLE.print(f"[bold yellow]Warning: fixing starts at step {start} ({reason}), but this run ends at step "
                          f"{last_step}: it will not fix anything. Set --pipeline.fix-start-step, or train longer "
                          f"(--max-num-iterations).[/bold yellow]")
        else:
            CONSOLE.print(f"Difix3D: fixing starts at step {start} ({reason}), then every {steps_per_fix} steps.")
        return start

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> List[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if trainer is not None:  # nerfstudio's Trainer calls this after loading --load-dir
            self.resolve_fix_start_step(int(trainer.config.max_num_iterations))
        callbacks = super().get_training_callbacks(training_callback_attributes)
        # a round renders and fixes every pseudo view (minutes with Difix): between iterations, outside nerfstudio's
        # iteration timer and ETA, its duration logged as "Pseudo-view round (s)"
        callbacks.append(BetweenIterationsCallback("Pseudo-view round", self.pseudo_view_round,
                                                   kwargs={"attributes": training_callback_attributes}))
        return callbacks

    def pseudo_view_round(self, step: int, attributes: Optional[TrainingCallbackAttributes] = None) -> bool:
        """Run a pseudo-view round if one is due at ``step``; returns whether one ran."""
        if len(self.pseudo_views) == 0:
            return False
        assert self.fix_start_step is not None, "resolve_fix_start_step() runs first (get_training_callbacks)"
        if int(self.pseudo_views.rounds) > 0 and not self._fix_phase_started:  # resumed inside the fix phase
            self._begin_fix_phase(step, attributes, lower_learning_rates=False)
        if not self.schedule.is_due(step) or int(self.pseudo_views.last_round_step) == step:
            return False
        distances = self.schedule.advance(self.pseudo_views, self.training_poses, step)
        result = run_fix_round(self.model, self.pseudo_views, self.fixer_handle.load(), self.references.image, step,
                               batch_size=self.config.fix_batch_size, fixer_context=self.fixer_context,
                               description=f"Pseudo-view round {int(self.pseudo_views.rounds)}")
        if not self._fix_phase_started:
            self._begin_fix_phase(step, attributes, lower_learning_rates=True)
        CONSOLE.print(f"Step {step}: pseudo-view round {int(self.pseudo_views.rounds)}, "
                      f"{int(self.pseudo_views.arrived.sum())}/{len(self.pseudo_views)} at their targets, "
                      f"mean distance left {float(distances.mean()):.3f}.")
        for name, value in pseudo_view_stats(self.pseudo_views).items():
            writer.put_scalar(name=name, scalar=value, step=step)
        if self.config.logged_pseudo_views > 0:
            log_pseudo_views(result, step, self.config.logged_pseudo_views)
        if self.config.show_pseudo_views and attributes is not None and attributes.trainer is not None:
            show_in_viewer(getattr(attributes.trainer, "viewer_state", None), self.pseudo_views)
        return True

    def _begin_fix_phase(self, step: int, attributes: Optional[TrainingCallbackAttributes],
                         lower_learning_rates: bool) -> None:
        begin = getattr(self.model, "begin_fix_phase", None)
        if begin is not None:
            begin(step)
        if lower_learning_rates and self.config.fix_phase_lr_mults and attributes is not None:
            changed = scale_learning_rates(attributes.optimizers, self.config.fix_phase_lr_mults)
            CONSOLE.print(f"Fix phase: learning rates now {changed}.")
        self._fix_phase_started = True
