"""RenderDiffusion (Anciukevičius et al., CVPR 2023, arXiv 2211.09869): a 3D-aware image diffusion model.

The denoiser of an image DDPM goes through 3D: ``g_θ(x_t, v) = ρ_ψ(e_φ(x_t), v)``. The noisy image x_t is encoded
by a U-Net into a triplane (:mod:`.encoder`), a small MLP turns a point and its plane features into density and
colour (:mod:`.decoder`), and volume rendering at the input camera v (stratified plus importance samples inside the
scene box, :class:`ns_diffusion_methods.triplane.rendering.BoxVolumeRenderer`) gives the denoised image x̂₀. Trained
with posed 2D images only: noise an image, denoise it through 3D, MSE against the clean image on the same view.

The scene includes floor and background (no white composite): the box holds the floor, and rays leaving the box
see one background colour, learned by default. The official code was never released; every choice the paper leaves
open is a config field documented here and in ``README.md``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn
from torch.nn import Parameter

from ns_diffusion_methods.engine.ema import update_ema, warmup_ema_decay
from ns_diffusion_methods.methods.renderdiffusion.decoder import TriplaneDecoderConfig
from ns_diffusion_methods.methods.renderdiffusion.diffusion import ImageDiffusion, ImageDiffusionConfig
from ns_diffusion_methods.methods.renderdiffusion.encoder import TriplaneEncoderConfig
from ns_diffusion_methods.methods.renderdiffusion.geometry import (
    frame_rotations,
    image_aligned_planes,
    pixel_rays,
    to_frame,
)
from ns_diffusion_methods.methods.renderdiffusion.procedures import Triplanes
from ns_diffusion_methods.metrics.image import psnr_from_mse
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig, ray_aabb_intersect


def _renderer_default() -> BoxVolumeRendererConfig:
    # Paper: EG3D-style coarse + one importance pass; EG3D uses 48 + 48 at 64x64. The renderer's own background is
    # black because the denoiser composites its (learned) background itself.
    return BoxVolumeRendererConfig(bound=1.0, min_near=0.2, num_samples=48, num_importance_samples=48,
                                   background=(0.0, 0.0, 0.0), chunk_size=8192)


@dataclass
class RenderDiffusionModelConfig(ModelConfig):
    """RenderDiffusion: the denoiser g_θ = ρ_ψ ∘ e_φ, its DDPM and the test-time settings."""

    _target: Type = field(default_factory=lambda: RenderDiffusionModel)
    enable_collider: bool = False
    """Unused (rays are bounded by the renderer's box)."""
    encoder: TriplaneEncoderConfig = field(default_factory=TriplaneEncoderConfig)
    """e_φ: the U-Net from the noisy image to the triplane."""
    decoder: TriplaneDecoderConfig = field(default_factory=TriplaneDecoderConfig)
    """s_ψ: the MLP from a point and its features to density and colour."""
    renderer: BoxVolumeRendererConfig = field(default_factory=_renderer_default)
    """ρ_ψ's volume rendering: box, stratified and importance sample counts. Its ``background`` must stay black
    (0, 0, 0): the denoiser adds its own background (see ``background``)."""
    diffusion: ImageDiffusionConfig = field(default_factory=ImageDiffusionConfig)
    """The DDPM (T, β schedule, reverse steps)."""
    triplane_frame: Literal["world", "yaw", "view"] = "yaw"
    """Frame of the triplane (the paper's encoder sees x_t only, so the frame must follow the input camera).
    ``yaw`` (default): the world frame turned about the up axis so the input camera is at azimuth 0 (floor kept
    horizontal); ``view``: the input camera's own axes. In both the encoder's feature maps are laid onto the planes
    image-aligned (``geometry.image_aligned_planes``) and novel views are rendered with relative poses. ``world``:
    the dataset's aligned frame; the encoder must then see the camera (``encoder.camera_conditioning`` ``plucker``
    or ``embedding``), as it cannot tell the azimuth from the image of a symmetric scene (README)."""
    background: Literal["learned", "white", "black"] = "learned"
    """Colour seen by rays that leave the box without hitting anything. RenderDiffusion's scenes have a backdrop,
    so one colour is learned by default."""
    pixels_per_image: int = -1
    """Random pixels per image rendered for the loss (-1: the whole image). The encoder always sees the whole image;
    on CPU a subset (e.g. 256) makes each step much cheaper."""
    ema_decay: float = 0.9999
    """Decay of the exponential moving average of e_φ and s_ψ used at test time (0 disables it). Warmed up as
    min(decay, (1 + step) / (10 + step))."""
    use_ema: bool = True
    """Use the EMA weights for reconstruction, generation, inpainting and evaluation."""
    reconstruction_t_r: int = 0
    """Single-view reconstruction noise level t_r (0: one clean pass, the paper's setting for renders; the paper uses
    40 for real photographs)."""
    reconstruction_steps: int = -1
    """Reverse steps from t_r to 0 (-1: as dense as ``diffusion.num_inference_steps`` over T)."""


class RenderDiffusionDenoiser(nn.Module):
    """g_θ: the triplane encoder, the MLP decoder, the renderer and the background colour.

    Implements the :class:`~ns_diffusion_methods.methods.renderdiffusion.procedures.Denoiser` protocol.
    """

    def __init__(self, config: RenderDiffusionModelConfig, image_size: int) -> None:
        super().__init__()
        self.config = config
        self.encoder = config.encoder.setup(image_size=image_size)
        self.decoder = config.decoder.setup(feature_dim=config.encoder.triplane_channels)
        if any(c != 0.0 for c in config.renderer.background):
            raise ValueError(f"`renderer.background` must be (0, 0, 0) for RenderDiffusion (the denoiser adds its own "
                             f"background, see `background`), but is {config.renderer.background}.")
        if config.triplane_frame == "world" and config.encoder.camera_conditioning == "none":
            raise ValueError("`triplane_frame` 'world' needs an encoder that sees the camera, but "
                             "`encoder.camera_conditioning` is 'none'. Set --pipeline.model.triplane-frame yaw (the "
                             "default) or --pipeline.model.encoder.camera-conditioning plucker.")
        self.renderer = config.renderer.setup()
        initial = {"learned": 0.5, "white": 1.0, "black": 0.0}[config.background]
        self.background = nn.Parameter(torch.full((3,), initial), requires_grad=config.background == "learned")

    def encode(self, noisy_image: Tensor, timesteps: Tensor, camera_to_worlds: Tensor,
               intrinsics: Tensor) -> Triplanes:
        """e_φ: x_t ``[B, 3, H, W]`` -> triplanes in the configured frame."""
        rotations = frame_rotations(camera_to_worlds, self.config.triplane_frame)
        planes = self.encoder(noisy_image, timesteps, to_frame(camera_to_worlds, rotations), intrinsics)
        return Triplanes(planes=image_aligned_planes(planes, self.config.triplane_frame), rotations=rotations)

    def field(self, planes: Tensor):
        """The renderer's field ``(xyz, directions) -> (density [B, M], rgb [B, M, 3])`` of ``planes``."""

        def query(xyz: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
            density, rgb = self.decoder(planes, xyz)
            return density.squeeze(-1), rgb

        return query

    def render(self, triplanes: Triplanes, camera_to_worlds: Tensor, intrinsics: Tensor, height: int, width: int,
               pixel_indices: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """ρ_ψ: render cameras ``[B, 3, 4]`` (world frame) from triplanes.

        Returns:
            ``rgb [B, R, 3]`` in [0, 1], ``accumulation [B, R, 1]``, ``depth [B, R, 1]`` (distance along the ray).
        """
        origins, directions = pixel_rays(camera_to_worlds, intrinsics, height, width, pixel_indices)
        return self.render_rays(triplanes, origins, directions)

    def render_rays(self, triplanes: Triplanes, origins: Tensor, directions: Tensor) -> Dict[str, Tensor]:
        """ρ_ψ on world-frame rays ``[B, R, 3]``: ray b goes through triplane b. Many views of one triplane are
        rendered as one long ray batch of that triplane (no copy of the planes per view)."""
        rot = triplanes.rotations
        origins = torch.einsum("bij,brj->bri", rot, origins)  # world -> triplane frame
        directions = torch.einsum("bij,brj->bri", rot, directions)
        field_fn = self.field(triplanes.planes)
        if torch.is_grad_enabled():
            out = self.renderer(field_fn, origins, directions, perturb=self.training)
        else:
            out = self.renderer.render_chunked(field_fn, origins, directions)
        background = self.background.clamp(0, 1)
        out["rgb"] = out["rgb"] + (1 - out["accumulation"]) * background
        return out

    def forward(self, noisy_image: Tensor, timesteps: Tensor, camera_to_worlds: Tensor, intrinsics: Tensor,
                pixel_indices: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """g_θ(x_t, v): encode, then render the input cameras (all pixels, or ``pixel_indices [B, R]``)."""
        _, _, H, W = noisy_image.shape
        triplanes = self.encode(noisy_image, timesteps, camera_to_worlds, intrinsics)
        out = self.render(triplanes, camera_to_worlds, intrinsics, H, W, pixel_indices)
        out["planes"] = triplanes.planes
        return out


class RenderDiffusionModel(Model):
    """nerfstudio model wrapping the denoiser, its EMA copy and the DDPM.

    Training (``forward(batch)``): ``batch`` holds ``image [B, H, W, 3]`` in [0, 1], ``camera_to_worlds [B, 3, 4]``
    and ``intrinsics [B, 4]``; x₀ = 2·image − 1 is noised at uniform t, denoised through 3D, and compared with x₀.
    Ray-bundle rendering (viewer, ``get_outputs_for_camera``) shows the last triplane set with :meth:`show`.
    """

    config: RenderDiffusionModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        image_size = self.kwargs.get("image_size")
        if image_size is None:
            raise ValueError("RenderDiffusionModel needs `image_size` (the side of the square training images); "
                             "the RenderDiffusion pipeline passes it.")
        self.image_size = int(image_size)
        self.denoiser = RenderDiffusionDenoiser(self.config, self.image_size)
        self.ema_denoiser: Optional[RenderDiffusionDenoiser] = None
        if self.config.ema_decay > 0:
            self.ema_denoiser = copy.deepcopy(self.denoiser)
            self.ema_denoiser.requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        self.diffusion: ImageDiffusion = self.config.diffusion.setup()
        self.shown: Optional[Triplanes] = None

    # ------------------------------------------------------------------ parameters and callbacks
    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        decoder = list(self.denoiser.decoder.parameters())
        if self.config.background == "learned":
            decoder.append(self.denoiser.background)
        return {"encoder": list(self.denoiser.encoder.parameters()), "decoder": decoder}

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> List[TrainingCallback]:
        if self.ema_denoiser is None:
            return []
        return [TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                 func=self.update_ema)]

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        """EMA ← d·EMA + (1−d)·θ with the warm-up d = min(decay, (1 + n) / (10 + n)), n = updates so far."""
        assert self.ema_denoiser is not None
        decay = warmup_ema_decay(self.config.ema_decay, int(self.ema_updates))
        update_ema(self.ema_denoiser, self.denoiser, decay, copy_buffers=False)
        self.ema_updates += 1

    @property
    def sampling_denoiser(self) -> RenderDiffusionDenoiser:
        """The denoiser used at test time: the EMA copy when enabled, else the trained one."""
        if self.config.use_ema and self.ema_denoiser is not None:
            return self.ema_denoiser
        return self.denoiser

    # ------------------------------------------------------------------ training pass
    def forward(self, ray_bundle: Union[Dict[str, Tensor], RayBundle]) -> Dict[str, Tensor]:  # type: ignore[override]
        """Training pass on a dict batch; ray bundles render the shown triplane (see :meth:`get_outputs`).

        The argument keeps nerfstudio's name: ``get_outputs_for_camera`` (viewer, ns-render) passes it by keyword."""
        return self.get_outputs(ray_bundle)

    def get_outputs(self, ray_bundle: Union[Dict[str, Tensor], RayBundle, Cameras]) -> Dict[str, Tensor]:
        if isinstance(ray_bundle, dict):
            return self._denoise_batch(ray_bundle)
        if isinstance(ray_bundle, RayBundle):
            return self._render_shown(ray_bundle)
        raise TypeError(f"RenderDiffusionModel renders dict batches or RayBundles, not {type(ray_bundle).__name__}.")

    def _denoise_batch(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        image = batch["image"].to(self.device)  # [B, H, W, 3]
        B, H, W, _ = image.shape
        x0 = image.permute(0, 3, 1, 2) * 2 - 1  # [B, 3, H, W] in [-1, 1]
        t = self.diffusion.sample_timesteps(B, self.device)
        noisy = self.diffusion.add_noise(x0, torch.randn_like(x0), t)
        pixels = self.config.pixels_per_image
        pixel_indices = None
        if 0 < pixels < H * W:
            pixel_indices = torch.rand(B, H * W, device=self.device).argsort(dim=1)[:, :pixels]  # [B, R]
        c2w = batch["camera_to_worlds"].to(self.device)
        intrinsics = batch["intrinsics"].to(self.device)
        out = self.denoiser(noisy, t, c2w, intrinsics, pixel_indices)
        target = x0.permute(0, 2, 3, 1).reshape(B, H * W, 3)
        if pixel_indices is not None:
            target = torch.gather(target, 1, pixel_indices[..., None].expand(-1, -1, 3))
        return {"x0_pred": out["rgb"] * 2 - 1, "x0": target, "timesteps": t, "accumulation": out["accumulation"]}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        if "x0_pred" not in outputs:
            return {}
        mse = F.mse_loss(outputs["x0_pred"].detach(), outputs["x0"])
        return {"psnr": psnr_from_mse(mse, data_range=2.0),  # x0 is in [-1, 1]
                "mean_timestep": outputs["timesteps"].float().mean(),
                "accumulation": outputs["accumulation"].detach().mean()}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        # x0-prediction: ||g(x_t, v) - x0||^2 on the rendered pixels
        return {"x0_loss": F.mse_loss(outputs["x0_pred"], outputs["x0"])}

    # ------------------------------------------------------------------ viewer / ns-render
    def show(self, triplanes: Triplanes) -> None:
        """Make ``triplanes[0]`` what ray-bundle rendering (the viewer) shows."""
        self.shown = Triplanes(triplanes.planes[:1].detach(), triplanes.rotations[:1].detach())

    def _render_shown(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        shape = ray_bundle.origins.shape[:-1]
        origins = ray_bundle.origins.reshape(1, -1, 3)
        directions = ray_bundle.directions.reshape(1, -1, 3)
        denoiser = self.sampling_denoiser
        if self.shown is None:  # nothing reconstructed or generated yet: the empty scene (background only)
            rgb = denoiser.background.clamp(0, 1).expand(*shape, 3)
            # the depth an empty field renders to (the far side of the box), not 0: the viewer composites by depth,
            # and a background at depth 0 would hide everything it draws (the training cameras)
            box = denoiser.renderer.config
            _, far, _ = ray_aabb_intersect(origins, directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-9),
                                           box.bound, box.min_near)
            return {"rgb": rgb, "accumulation": torch.zeros(*shape, 1, device=rgb.device),
                    "depth": far.reshape(*shape, 1)}
        rot = self.shown.rotations
        origins = torch.einsum("bij,brj->bri", rot, origins)
        directions = torch.einsum("bij,brj->bri", rot, directions)
        out = denoiser.renderer.render_chunked(denoiser.field(self.shown.planes), origins, directions)
        out["rgb"] = out["rgb"] + (1 - out["accumulation"]) * denoiser.background.clamp(0, 1)
        return {key: value.reshape(*shape, value.shape[-1]) for key, value in out.items()}

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        # Per-image scoring is done by the pipeline's reconstruction protocol; this scores a shown render.
        gt = batch["image"].to(outputs["rgb"].device)
        mse = F.mse_loss(outputs["rgb"], gt)
        return {"psnr": float(psnr_from_mse(mse))}, {"img": torch.cat([gt, outputs["rgb"]], 1)}
