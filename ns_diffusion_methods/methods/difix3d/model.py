"""The difix3d models: nerfacto and splatfacto that train on pseudo views and offer a render-time fixed output.

Difix3D+ (Wu et al., CVPR 2025, https://arxiv.org/abs/2503.01774) keeps the 3D representation of its backbone; what
changes is the data it trains on (pseudo views, see :mod:`ns_diffusion_methods.dataset_updates.pseudo_views`) and a
final per-frame fix at render time. So these models are nerfacto and splatfacto with exactly their parameters (a
``nerfacto``/``splatfacto`` checkpoint loads with ``--load-dir``, optimizer states included), plus:

- **pseudo views never touch per-training-image parameters.** Pseudo rays carry camera index -1: nerfacto's
  appearance embedding gives them the average embedding (what novel views get at evaluation) and its camera optimiser
  leaves them unchanged (:class:`NovelViewEmbedding`, :class:`NovelViewCameraOptimizer`); splatfacto's camera
  optimiser and bilateral grid already skip cameras without ``cam_idx`` metadata, which pseudo cameras do not have.
- **``rgb_fixed``** (Difix3D+): Difix applied to ``rgb`` with the nearest training image as reference, computed only
  when read (see :mod:`ns_diffusion_methods.methods.difix3d.fixing`); ``ns-eval`` also reports ``psnr_fixed``,
  ``ssim_fixed`` and ``lpips_fixed`` when ``eval_fixed`` is on.
- **splatting on any device**: :class:`Difix3DSplatModel` rasterizes with gsplat on CUDA and with the package's
  pure-PyTorch rasterizer elsewhere (:mod:`ns_diffusion_methods.rendering`), and has none of splatfacto's hard
  ``.cuda()`` calls; densification stops at the first pseudo-view round (the official gsplat recipe has none during
  the fixing phase).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizer, CameraOptimizerConfig
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.field_components.embedding import Embedding
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, SplatfactoModelConfig
from torch import Tensor

from ns_diffusion_methods.methods.difix3d.fixing import RenderFixingMixin
from ns_diffusion_methods.metrics.lpips import package_lpips_in_stock_models
from ns_diffusion_methods.rendering import rasterization

# --------------------------------------------------------------------------------------------------------------------
# per-training-image parameters that pseudo views (index -1) must not use


class NovelViewEmbedding(Embedding):
    """nerfacto's per-image appearance embedding, which gives indices outside ``[0, num_images)`` (pseudo views) the
    appearance nerfacto gives novel views at evaluation: the mean embedding, or zeros."""

    def __init__(self, in_dim: int, out_dim: int, use_average: bool = True) -> None:
        super().__init__(in_dim, out_dim)
        self.use_average = use_average

    def forward(self, in_tensor: Tensor) -> Tensor:  # type: ignore[override]
        novel = (in_tensor < 0) | (in_tensor >= self.in_dim)
        if not bool(novel.any()):
            return self.embedding(in_tensor)
        known = self.embedding(torch.where(novel, torch.zeros_like(in_tensor), in_tensor))
        fallback = self.mean(dim=0) if self.use_average else torch.zeros_like(known[..., 0, :])
        return torch.where(novel[..., None], fallback.expand_as(known), known)


class NovelViewCameraOptimizer(CameraOptimizer):
    """nerfacto's camera optimiser, which leaves rays of cameras outside ``[0, num_cameras)`` (pseudo views)
    uncorrected instead of indexing (or wrapping around to) another camera's correction."""

    def forward(self, indices: Tensor) -> Tensor:  # type: ignore[override]
        novel = (indices < 0) | (indices >= self.num_cameras)
        if not bool(novel.any()):
            return super().forward(indices)
        corrections = super().forward(torch.where(novel, torch.zeros_like(indices), indices))
        identity = torch.eye(4, device=corrections.device, dtype=corrections.dtype)[:3, :4]
        return torch.where(novel.reshape(-1, 1, 1), identity.expand_as(corrections), corrections)


@dataclass
class NovelViewCameraOptimizerConfig(CameraOptimizerConfig):
    """nerfacto's camera optimiser config, building a :class:`NovelViewCameraOptimizer`."""

    _target: Type = field(default_factory=lambda: NovelViewCameraOptimizer)


# --------------------------------------------------------------------------------------------------------------------
# nerfacto


@dataclass
class Difix3DNerfactoModelConfig(NerfactoModelConfig):
    """nerfacto for Difix3D: same parameters, pseudo-view-safe per-image parameters, lazy ``rgb_fixed`` output."""

    _target: Type = field(default_factory=lambda: Difix3DNerfactoModel)
    camera_optimizer: CameraOptimizerConfig = field(
        default_factory=lambda: NovelViewCameraOptimizerConfig(mode="SO3xR3"))
    """Camera pose optimiser (nerfacto's; pseudo-view rays are left uncorrected)."""
    render_fixed: bool = True
    """Offer the `rgb_fixed` output (Difix3D+: Difix on `rgb`, nearest training image as reference); it is computed
    only when requested (ns-render --rendered-output-names rgb_fixed, the viewer's output menu, evaluation)."""
    eval_fixed: bool = True
    """Also report psnr_fixed / ssim_fixed / lpips_fixed of `rgb_fixed` in evaluation (ns-eval); needs the fixer."""


class Difix3DNerfactoModel(RenderFixingMixin, NerfactoModel):
    """nerfacto whose per-training-image parameters ignore pseudo-view rays (camera index -1).

    Args:
        config: :class:`Difix3DNerfactoModelConfig`.
    """

    config: Difix3DNerfactoModelConfig

    def populate_modules(self) -> None:
        with package_lpips_in_stock_models():  # nerfacto builds LPIPS here: unavailable offline, not fatal
            super().populate_modules()
        old = self.field.embedding_appearance
        if old is not None:
            # same parameter (same state-dict key), with the novel-view fallback
            embedding = NovelViewEmbedding(old.in_dim, old.out_dim, self.field.use_average_appearance_embedding)
            embedding.embedding = old.embedding
            self.field.embedding_appearance = embedding

    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        return self.with_rgb_fixed(super().get_outputs_for_camera(camera, obb_box=obb_box), camera)

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        gt_rgb = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        fixed_metrics, fixed_images = self.fixed_image_metrics(outputs, gt_rgb)
        metrics.update(fixed_metrics)
        images.update(fixed_images)
        return metrics, images


# --------------------------------------------------------------------------------------------------------------------
# splatfacto


def world_to_camera(camera_to_world: Tensor) -> Tensor:
    """nerfstudio (OpenGL) c2w ``[C, 3, 4]`` -> gsplat (OpenCV) world-to-camera ``[C, 4, 4]``.

    splatfacto's own ``get_viewmat`` is wrapped in ``torch.compile``, which on a CPU compiles C++ on first use.
    """
    rotation = camera_to_world[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], device=camera_to_world.device,
                                                          dtype=camera_to_world.dtype)  # flip y and z axes
    translation = camera_to_world[:, :3, 3:4]
    viewmat = torch.zeros(camera_to_world.shape[0], 4, 4, device=camera_to_world.device, dtype=camera_to_world.dtype)
    viewmat[:, :3, :3] = rotation.transpose(1, 2)
    viewmat[:, :3, 3:4] = -rotation.transpose(1, 2) @ translation
    viewmat[:, 3, 3] = 1.0
    return viewmat


@dataclass
class Difix3DSplatModelConfig(SplatfactoModelConfig):
    """splatfacto for Difix3D: same parameters, rasterizes on any device, lazy ``rgb_fixed`` output."""

    _target: Type = field(default_factory=lambda: Difix3DSplatModel)
    rasterizer: str = "auto"
    """Rasterizer backend: auto (gsplat on CUDA, the package's torch rasterizer elsewhere), gsplat, or torch."""
    densify_during_fixing: bool = False
    """Keep densifying and pruning once pseudo views are trained on (the official recipe does not)."""
    render_fixed: bool = True
    """Offer the `rgb_fixed` output (Difix3D+: Difix on `rgb`, nearest training image as reference); it is computed
    only when requested (ns-render --rendered-output-names rgb_fixed, the viewer's output menu, evaluation)."""
    eval_fixed: bool = True
    """Also report psnr_fixed / ssim_fixed / lpips_fixed of `rgb_fixed` in evaluation (ns-eval); needs the fixer."""

    def __post_init__(self) -> None:
        if self.rasterizer not in ("auto", "gsplat", "torch"):
            raise ValueError(f"`rasterizer` must be auto, gsplat or torch, but is {self.rasterizer!r}.")


class Difix3DSplatModel(RenderFixingMixin, SplatfactoModel):
    """splatfacto that runs on CPU as well as CUDA (see the module docstring).

    Args:
        config: :class:`Difix3DSplatModelConfig`.
    """

    config: Difix3DSplatModelConfig

    def populate_modules(self) -> None:
        seed_points = self.seed_points
        has_colours = seed_points is not None and not self.config.random_init and seed_points[1].shape[0] > 0
        if has_colours:
            # splatfacto builds the SH from seed colours with a hard `.cuda()`: let it take its colourless path and
            # set the colours here, on the CPU, with the same formula
            assert seed_points is not None
            self.seed_points = (seed_points[0], seed_points[1][:0])
        with package_lpips_in_stock_models():  # splatfacto builds LPIPS here: unavailable offline, not fatal
            super().populate_modules()
        self.seed_points = seed_points
        if has_colours:
            assert seed_points is not None
            colours = seed_points[1].float() / 255.0
            features_dc = RGB2SH(colours) if self.config.sh_degree > 0 else torch.logit(colours, eps=1e-10)
            self.gauss_params["features_dc"] = torch.nn.Parameter(features_dc)
            self.gauss_params["features_rest"] = torch.nn.Parameter(torch.zeros_like(self.features_rest))

    def load_state_dict(self, state_dict, **kwargs):  # type: ignore[override]
        """Load Gaussians, resizing the parameters *in place*.

        splatfacto's own ``load_state_dict`` replaces every Gaussian parameter with a new ``Parameter``; with
        ``--load-dir`` the optimizers already hold the old ones, so a resumed run would optimise tensors the model no
        longer renders (training silently stops). Keeping the parameter objects keeps the optimizers attached.
        """
        self.step = 30000  # as splatfacto: a loaded model renders with its full SH degree until training sets it
        if "means" in state_dict:  # checkpoints from before gauss_params existed
            for name in ("means", "scales", "quats", "features_dc", "features_rest", "opacities"):
                state_dict[f"gauss_params.{name}"] = state_dict.pop(name)
        count = state_dict["gauss_params.means"].shape[0]
        for param in self.gauss_params.values():
            param.data = torch.zeros((count,) + tuple(param.shape[1:]), device=param.device, dtype=param.dtype)
        return torch.nn.Module.load_state_dict(self, state_dict, **kwargs)

    def begin_fix_phase(self, step: int) -> None:
        """Called by the pipeline once pseudo views exist: stop densification (unless ``densify_during_fixing``)."""
        if not self.config.densify_during_fixing:
            self.strategy.refine_stop_iter = min(self.strategy.refine_stop_iter, step)

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """Render one camera (splatfacto's ``get_outputs``, with the device-dispatching rasterizer)."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"{type(self).__name__}.get_outputs needs a Cameras object, but got {type(camera)}.")
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds

        if self.crop_box is not None and not self.training:
            crop_ids = self.crop_box.within(self.means).squeeze()
            if crop_ids.sum() == 0:
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()),
                                              self.background_color)
            params = {name: value[crop_ids] for name, value in self.gauss_params.items()}
        else:
            params = dict(self.gauss_params)
        colors = torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1)  # [N, K, 3]

        downscale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / downscale)
        viewmat = world_to_camera(camera_to_world)
        K = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        self.last_size = (height, width)
        camera.rescale_output_resolution(downscale)

        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors = torch.sigmoid(colors).squeeze(1)  # [N, 1, 3] -> [N, 3]
            sh_degree = None

        render, alpha, self.info = rasterization(
            means=params["means"], quats=params["quats"], scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1), colors=colors, viewmats=viewmat.to(self.device),
            Ks=K, width=width, height=height, near_plane=0.01, far_plane=1e10, render_mode=render_mode,
            sh_degree=sh_degree, absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode,
            backend=self.config.rasterizer)  # type: ignore[arg-type]
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step,
                                            self.info)

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        if self.config.use_bilateral_grid and self.training and camera.metadata is not None \
                and "cam_idx" in camera.metadata:
            rgb = self._apply_bilateral_grid(rgb, camera.metadata["cam_idx"], height, width)
        depth = None
        if render_mode == "RGB+ED":
            depth = torch.where(alpha > 0, render[..., 3:4], render[..., 3:4].detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0),  # type: ignore[dict-item]
                "background": background}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        self.set_crop(obb_box)
        outputs = self.get_outputs(camera.to(self.device))
        return self.with_rgb_fixed(outputs, camera)  # type: ignore[arg-type]

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
                                     ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        fixed_metrics, fixed_images = self.fixed_image_metrics(outputs, gt_rgb)
        metrics.update(fixed_metrics)
        images.update(fixed_images)
        return metrics, images
