"""RenderDiffusion pipeline: training on single posed images, and the per-object test protocols.

Training uses nerfstudio's stock ``Trainer``: each step takes B random training images with their cameras from the
multi-object datamanager (``mode="images"``) and returns the x₀ loss of :class:`RenderDiffusionModel`.

``ns-eval`` (:meth:`RenderDiffusionPipeline.get_average_eval_image_metrics`) runs single-view reconstruction on every
held-out object: the designated input view (:meth:`MultiObjectDataManager.eval_input_views`) is noised to ``t_r``
and denoised, the final triplane renders every other view, and PSNR / SSIM / LPIPS (LPIPS only where its weights are
available) are averaged over all scored views. With ``eval_inpainting`` it also inpaints a centred square of each
input view (RePaint) and reports PSNR inside the mask and on the novel views of the inpainted reconstruction.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.distributed as dist
import torchvision.utils as vutils
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.base_model import Model
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.cuda.amp.grad_scaler import GradScaler
from torch.nn.parallel import DistributedDataParallel as DDP

from ns_diffusion_methods.compat import enable_for_package_runs
from ns_diffusion_methods.data.multi_object import MultiObjectDataManagerConfig, ObjectViews
from ns_diffusion_methods.engine.pipeline import DiffusionPipeline
from ns_diffusion_methods.engine.progress import StepCallback, progress_bars, step_task
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.methods.renderdiffusion import procedures
from ns_diffusion_methods.methods.renderdiffusion.model import RenderDiffusionModel, RenderDiffusionModelConfig
from ns_diffusion_methods.methods.renderdiffusion.procedures import Triplanes
from ns_diffusion_methods.metrics.image import psnr_per_image, ssim
from ns_diffusion_methods.metrics.lpips import drop_unavailable, lpips_metric


def camera_tensors(cameras: Cameras) -> Tuple[Tensor, Tensor]:
    """``Cameras [B]`` -> ``camera_to_worlds [B, 3, 4]`` and ``intrinsics [B, 4]`` (fx, fy, cx, cy)."""
    c2w = cameras.camera_to_worlds.reshape(-1, 3, 4)
    intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(-1, 4)
    return c2w, intrinsics


def centre_square_mask(height: int, width: int, fraction: float, device=None) -> Tensor:
    """``[1, 1, H, W]`` mask, 1 inside a centred square whose side is ``fraction`` of the image side."""
    side_h, side_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - side_h) // 2, (width - side_w) // 2
    mask = torch.zeros(1, 1, height, width, device=device)
    mask[..., top: top + side_h, left: left + side_w] = 1.0
    return mask


@dataclass
class RenderDiffusionPipelineConfig(VanillaPipelineConfig):
    """RenderDiffusion: training on single posed images, reconstruction evaluation per held-out object."""

    _target: Type = field(default_factory=lambda: RenderDiffusionPipeline)
    datamanager: MultiObjectDataManagerConfig = field(
        default_factory=lambda: MultiObjectDataManagerConfig(mode="images", images_per_batch=8))
    """Multi-object data (``mode`` must be ``images``: RenderDiffusion trains on single images)."""
    model: RenderDiffusionModelConfig = field(default_factory=RenderDiffusionModelConfig)
    """The RenderDiffusion model."""
    eval_max_objects: int = -1
    """Evaluate at most this many held-out objects in ``ns-eval`` (-1: all)."""
    eval_inpainting: bool = False
    """Also run the RePaint inpainting protocol in ``ns-eval`` (slow: a full reverse chain per object)."""
    inpainting_mask_fraction: float = 0.375
    """Side of the centred square mask of the inpainting protocol, as a fraction of the image side."""
    eval_seed: int = 0
    """Seed of the noise drawn by the evaluation protocols (reconstruction at t_r > 0, inpainting)."""


class RenderDiffusionPipeline(DiffusionPipeline):
    """Trains RenderDiffusion with the stock trainer and runs its per-object test protocols."""

    config: RenderDiffusionPipelineConfig

    def __init__(self, config: RenderDiffusionPipelineConfig, device: str,
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 grad_scaler: Optional[GradScaler] = None) -> None:
        enable_for_package_runs()  # before the first check: its error shows as an `Error:` line
        if config.datamanager.mode != "images":
            raise DataError(f"RenderDiffusion trains on whole images, but the datamanager's `mode` is "
                            f"{config.datamanager.mode!r}. Set --pipeline.datamanager.mode images.")
        self._set_up_datamanager(config, device, test_mode, world_size, local_rank)
        height, width = self.datamanager.train_images.shape[1:3]
        if height != width:
            raise DataError(f"RenderDiffusion's U-Net encodes square images into square planes, but the training "
                            f"images of {self.datamanager.get_datapath()} are {height}x{width}. Crop or resize the "
                            f"dataset to square images.")
        self._set_up_model(device, grad_scaler, image_size=height)
        if world_size > 1:
            self._model = typing.cast(Model, DDP(self._model, device_ids=[local_rank], find_unused_parameters=True))
            dist.barrier(device_ids=[local_rank])
        self._lpips = None
        self._eval_image_count = 0

    @property
    def model(self) -> RenderDiffusionModel:  # type: ignore[override]
        return typing.cast(RenderDiffusionModel, super().model)

    # ------------------------------------------------------------------ training
    def _image_batch(self, cameras: Cameras, images: Tensor) -> Dict[str, Tensor]:
        c2w, intrinsics = camera_tensors(cameras)
        return {"image": images, "camera_to_worlds": c2w.to(self.device), "intrinsics": intrinsics.to(self.device)}

    def get_train_loss_dict(self, step: int):
        cameras, batch = self.datamanager.next_train(step)
        model_batch = self._image_batch(cameras, batch["image"])
        model_outputs = self._model(model_batch)  # through DDP when distributed
        metrics_dict = self.model.get_metrics_dict(model_outputs, model_batch)
        loss_dict = self.model.get_loss_dict(model_outputs, model_batch, metrics_dict)
        return model_outputs, loss_dict, metrics_dict

    @torch.no_grad()
    def get_eval_loss_dict(self, step: int):
        """The training loss on the views of one random held-out object."""
        self.eval()
        obj = int(torch.randint(self.datamanager.num_eval_objects, (1,)))
        views = self.datamanager.eval_object(obj)
        count = min(len(views.images), self.datamanager.config.images_per_batch)
        model_batch = self._image_batch(views.cameras[:count], views.images[:count])
        model_outputs = self.model(model_batch)
        metrics_dict = self.model.get_metrics_dict(model_outputs, model_batch)
        loss_dict = self.model.get_loss_dict(model_outputs, model_batch, metrics_dict)
        self.train()
        return model_outputs, loss_dict, metrics_dict

    # ------------------------------------------------------------------ test-time procedures on one object
    def _generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.config.eval_seed + offset)

    @torch.no_grad()
    def reconstruct_object(self, views: ObjectViews, input_view: int,
                           generator: Optional[torch.Generator] = None) -> Tuple[Triplanes, Tensor]:
        """Reconstruct from view ``input_view`` of ``views``, then render all its views.

        Returns:
            The triplane and the renders of every view ``[V, 3, H, W]`` in [0, 1].
        """
        model = self.model
        c2w, intrinsics = camera_tensors(views.cameras)
        c2w, intrinsics = c2w.to(self.device), intrinsics.to(self.device)
        image = views.images[input_view].permute(2, 0, 1)[None].to(self.device)  # [1, 3, H, W]
        steps = model.config.reconstruction_steps
        triplanes, _ = procedures.reconstruct(model.sampling_denoiser, model.diffusion, image,
                                              c2w[input_view: input_view + 1], intrinsics[input_view: input_view + 1],
                                              t_r=model.config.reconstruction_t_r,
                                              num_steps=None if steps < 1 else steps, generator=generator)
        H, W = image.shape[-2:]
        renders = procedures.render_views(model.sampling_denoiser, triplanes, c2w[None], intrinsics[None], H, W,
                                          rays_per_chunk=model.config.renderer.chunk_size)[0]
        return triplanes, renders

    @torch.no_grad()
    def inpaint_object(self, views: ObjectViews, input_view: int, mask: Tensor,
                       generator: Optional[torch.Generator] = None,
                       on_step: Optional[StepCallback] = None) -> Tuple[Triplanes, Tensor, Tensor]:
        """RePaint-inpaint ``mask [1, 1, H, W]`` (1 = unknown) of view ``input_view``, then render every view;
        ``on_step(done, total)`` follows the reverse steps.

        Returns:
            The triplane, the inpainted input view ``[3, H, W]`` and the renders of every view ``[V, 3, H, W]``.
        """
        model = self.model
        c2w, intrinsics = camera_tensors(views.cameras)
        c2w, intrinsics = c2w.to(self.device), intrinsics.to(self.device)
        image = views.images[input_view].permute(2, 0, 1)[None].to(self.device)
        triplanes, inpainted, _ = procedures.inpaint(
            model.sampling_denoiser, model.diffusion, image, mask.to(self.device), c2w[input_view: input_view + 1],
            intrinsics[input_view: input_view + 1], generator=generator, on_step=on_step)
        H, W = image.shape[-2:]
        renders = procedures.render_views(model.sampling_denoiser, triplanes, c2w[None], intrinsics[None], H, W,
                                          rays_per_chunk=model.config.renderer.chunk_size)[0]
        return triplanes, inpainted[0], renders

    def _lpips_metric(self):
        if self._lpips is None:
            self._lpips = lpips_metric(normalize=True).to(self.device)
        return self._lpips

    # ------------------------------------------------------------------ nerfstudio evaluation hooks
    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int):
        """Reconstruct one held-out object (cycling with ``step``) and score one of its novel views."""
        self.eval()
        obj = self._eval_image_count % self.datamanager.num_eval_objects
        self._eval_image_count += 1
        views = self.datamanager.eval_object(obj, num_inputs=1)
        input_view = views.input_views[0]
        triplanes, renders = self.reconstruct_object(views, input_view, self._generator(obj))
        self.model.show(triplanes)
        scored = views.scored_views[len(views.scored_views) // 2]
        gt = views.images[scored].permute(2, 0, 1)[None]
        pred = renders[scored: scored + 1]
        metrics = {"psnr": float(psnr_per_image(pred, gt)[0]), "ssim": float(ssim(pred, gt, reduction="none")[0]),
                   "input_psnr": float(psnr_per_image(renders[input_view: input_view + 1],
                                                      views.images[input_view].permute(2, 0, 1)[None])[0]),
                   "num_rays": int(gt.shape[-1] * gt.shape[-2])}
        row = torch.cat([views.images[input_view], gt[0].permute(1, 2, 0), pred[0].permute(1, 2, 0)], dim=1)
        self.train()
        return metrics, {"input_gt_novel": row}

    @torch.no_grad()
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False) -> Dict[str, float]:
        """The reconstruction protocol over the held-out objects (see the module docstring)."""
        self.eval()
        num_objects = self.datamanager.num_eval_objects
        if self.config.eval_max_objects > 0:
            num_objects = min(num_objects, self.config.eval_max_objects)
        if output_path is not None:
            output_path.mkdir(parents=True, exist_ok=True)
        per_view: Dict[str, List[float]] = {}
        lpips = self._lpips_metric()
        with progress_bars(CONSOLE) as progress:
            task = progress.add_task("renderdiffusion reconstruction: objects", total=num_objects)
            for obj in range(num_objects):
                views = self.datamanager.eval_object(obj, num_inputs=1)
                input_view = views.input_views[0]
                triplanes, renders = self.reconstruct_object(views, input_view, self._generator(obj))
                scored = views.scored_views
                gt = views.images[scored].permute(0, 3, 1, 2)
                pred = renders[scored]
                per_view.setdefault("psnr", []).extend(psnr_per_image(pred, gt).tolist())
                per_view.setdefault("ssim", []).extend(ssim(pred, gt, reduction="none").tolist())
                if getattr(lpips, "available", True):
                    per_view.setdefault("lpips", []).extend(float(lpips(p[None], g[None])) for p, g in zip(pred, gt))
                if self.config.eval_inpainting:
                    H, W = gt.shape[-2:]
                    mask = centre_square_mask(H, W, self.config.inpainting_mask_fraction, self.device)
                    with step_task(progress, "  inpainting: reverse steps") as on_step:
                        _, inpainted, inpaint_renders = self.inpaint_object(views, input_view, mask,
                                                                            self._generator(10_000 + obj), on_step)
                    target = views.images[input_view].permute(2, 0, 1)[None]
                    per_view.setdefault("inpaint_psnr_masked", []).append(
                        float(psnr_per_image(inpainted[None], target, mask)[0]))
                    per_view.setdefault("inpaint_novel_psnr", []).extend(
                        psnr_per_image(inpaint_renders[scored], gt).tolist())
                if output_path is not None:
                    grid = torch.cat([views.images[input_view].permute(2, 0, 1)[None], gt, pred])
                    vutils.save_image(grid.cpu(), output_path / f"object_{obj:04d}_{views.name}.png",
                                      nrow=len(scored) + 1)
                progress.advance(task)
        results: Dict[str, float] = {}
        for key, values in per_view.items():
            tensor = torch.tensor(values, dtype=torch.float64)
            results[key] = float(tensor.mean())
            if get_std:
                results[f"{key}_std"] = float(tensor.std()) if tensor.numel() > 1 else 0.0
        results["num_objects"] = float(num_objects)
        results["t_r"] = float(self.model.config.reconstruction_t_r)
        self.train()
        return drop_unavailable(results)
