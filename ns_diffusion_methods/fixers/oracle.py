"""An oracle fixer for synthetic captures: the scene's ground truth at the render's camera, lightly degraded.

Benchmarks of the 3D machinery around a fixer (Difix3D's progressive pseudo views) need a fixer whose quality is
known. On a synthetic capture (``ns-diffusion-synth``) the generator can render the true image of any camera, so this
fixer returns that image, blurred and with a little noise, instead of repairing the render: it shows how much the 3D
update turns *good* fixes into better evaluation views, independently of how good Difix is on the data.

It is camera-aware: callers pass the nerfstudio ``cameras`` of the images (``needs_cameras = True``; the difix3d
pipeline and models do) and the dataparser transform that maps them back to the capture's frame (or set
``dataparser_transforms`` in the config). It ignores the renders and the references.

Chosen on the command line like any fixer backend::

    ns-train difix3d-nerfacto --data CAPTURE pipeline.fixer:oracle --pipeline.fixer.scene CAPTURE/scene.json
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Type, Union

import torch
from torch import Tensor

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.base import Fixer, FixerConfig, check_fixer_inputs


@dataclass
class OracleFixerConfig(FixerConfig):
    """The ground-truth oracle of a synthetic capture (for benchmarks; see the module docstring)."""

    _target: Type = field(default_factory=lambda: OracleFixer)
    scene: Path = Path("scene.json")
    """The capture's scene.json (written by ns-diffusion-synth next to transforms.json)."""
    dataparser_transforms: Optional[Path] = None
    """A run's dataparser_transforms.json (or its folder) mapping the cameras back to the capture frame; None = use the
    transform the caller passes (the difix3d pipeline passes its dataparser's)."""
    blur_sigma: float = 0.5
    """Standard deviation in pixels of the Gaussian blur applied to the ground truth (0 = none)."""
    noise_std: float = 0.01
    """Standard deviation of the additive Gaussian noise, in [0, 1] intensity units (0 = none)."""
    include_removable: bool = True
    """Render the scene's removable object (object-removal captures)."""

    def summary(self) -> str:
        return f"oracle ({self.scene})"


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``images [B, C, H, W]`` (reflect padding); ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return images
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = torch.nn.functional.pad(images, (radius, radius, 0, 0), mode="reflect" if images.shape[-1] > radius
                                     else "replicate")
    blurred = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    padded = torch.nn.functional.pad(blurred, (0, 0, radius, radius), mode="reflect" if images.shape[-2] > radius
                                     else "replicate")
    return torch.nn.functional.conv2d(padded, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class OracleFixer(Fixer):
    """Returns the synthetic scene's ground truth at each image's camera, blurred and noised.

    Args:
        config: :class:`OracleFixerConfig`.
        device: where outputs are returned.
    """

    config: OracleFixerConfig
    #: the difix3d pipeline and models pass ``cameras=`` (and the dataparser transform) to fixers that ask for them
    needs_cameras = True

    def __init__(self, config: OracleFixerConfig, device: Union[str, torch.device] = "cpu",
                 flag: str = "--model") -> None:
        super().__init__(config, device, flag)
        from ns_diffusion_methods.synthetic.render import load_dataparser_transform
        from ns_diffusion_methods.synthetic.scene import Scene

        scene_path = Path(config.scene)
        if not scene_path.is_file():
            raise DataError(f"The oracle fixer needs the synthetic capture's scene file, but {scene_path} does not "
                            f"exist. Point `scene` (difix3d: --pipeline.fixer.scene) at <capture>/scene.json, "
                            f"written by ns-diffusion-synth.")
        self.scene = Scene.from_json(scene_path)
        self.transform: Optional[Tensor] = None
        self.scale: Optional[float] = None
        if config.dataparser_transforms is not None:
            self.transform, self.scale = load_dataparser_transform(config.dataparser_transforms)

    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None, cameras: Any = None,
            dataparser_transform: Optional[Tensor] = None, dataparser_scale: Optional[float] = None) -> Tensor:
        """The ground truth at ``cameras`` (nerfstudio ``Cameras``, one per image, the images' size), degraded.

        ``dataparser_transform``/``dataparser_scale`` map the cameras to the capture frame when the config gives no
        ``dataparser_transforms``; with neither, the cameras are taken to be in the capture frame.
        """
        from ns_diffusion_methods.synthetic.render import render_nerfstudio_cameras

        check_fixer_inputs(images, references)
        if cameras is None:
            raise ValueError("The oracle fixer renders the ground truth at the images' cameras: pass `cameras=` "
                             "(nerfstudio Cameras, one per image).")
        cameras = cameras.flatten()
        if cameras.shape[0] != images.shape[0]:
            raise ValueError(f"Got {cameras.shape[0]} cameras for {images.shape[0]} images; pass one per image.")
        transform, scale = self.transform, self.scale
        if transform is None and dataparser_transform is not None:
            transform, scale = torch.as_tensor(dataparser_transform), float(dataparser_scale)  # type: ignore[arg-type]
        truth = render_nerfstudio_cameras(self.scene, cameras.to("cpu"), transform, scale,
                                          include_removable=self.config.include_removable)  # [B, H, W, 3]
        truth = truth.permute(0, 3, 1, 2).float()
        if tuple(truth.shape[-2:]) != tuple(images.shape[-2:]):
            raise ValueError(f"The cameras render {tuple(truth.shape[-2:])} images but the inputs are "
                             f"{tuple(images.shape[-2:])}; pass the cameras the images were rendered with.")
        degraded = gaussian_blur(truth, self.config.blur_sigma)
        if self.config.noise_std > 0:
            if generator is None:
                generator = torch.Generator().manual_seed(self.config.seed if seed is None else seed)
            degraded = degraded + self.config.noise_std * torch.randn(degraded.shape, generator=generator)
        return degraded.clamp(0, 1).to(images.device, images.dtype)
