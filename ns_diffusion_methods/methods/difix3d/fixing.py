"""Render-time fixing (Difix3D+) and the pieces the difix3d pipeline and models share.

**How ``rgb_fixed`` is computed only when asked for.** nerfstudio has no hook for post-processing renders: ``ns-render``
calls ``model.get_outputs_for_camera(camera)`` and then reads ``outputs[name]`` for each ``--rendered-output-names``
entry; the viewer lists ``outputs.keys()`` in its output menu and reads only the selected entries. The difix3d models
therefore return their outputs as :class:`LazyOutputs`, a dict whose ``rgb_fixed`` entry is a *promise*: it is listed
by ``keys()`` and ``in``, and computed (Difix on ``rgb`` with the nearest training image as reference) the first time
it is read. Renders that never read it (training-time pseudo-view renders, ``ns-render --rendered-output-names rgb``,
the viewer showing ``rgb``) pay nothing, and the fixer itself is loaded on first use (:class:`FixerHandle`), so
``ns-eval``/``ns-render``/``ns-viewer`` load Difix only when a fixed image is requested. ``--pipeline.model.render-fixed
False`` removes the entry altogether. The fixer is no ``nn.Module`` attribute of the model or pipeline, so its weights
never enter checkpoints.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ns_diffusion_methods.geometry.poses import nearest_pose_indices

#: the render-time fixed output
RGB_FIXED = "rgb_fixed"


class LazyOutputs(dict):
    """A model-outputs dict with entries computed on first access (see the module docstring).

    Iterating, ``keys()`` and ``in`` do not compute anything; ``outputs[name]``, ``get``, ``items()`` and ``values()``
    compute what they return (once; the result is cached).
    """

    def __init__(self, outputs: Mapping[str, Any], lazy: Mapping[str, Callable[[], Any]]) -> None:
        super().__init__(outputs)
        self._lazy: Dict[str, Callable[[], Any]] = dict(lazy)
        for name in self._lazy:
            super().__setitem__(name, None)

    def is_computed(self, name: str) -> bool:
        """Whether entry ``name`` holds a value (True for ordinary entries)."""
        return name in self and name not in self._lazy

    def __getitem__(self, name: str) -> Any:
        if name in self._lazy:
            super().__setitem__(name, self._lazy.pop(name)())
        return super().__getitem__(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._lazy.pop(name, None)
        super().__setitem__(name, value)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self[name] if name in self else default

    def __iter__(self) -> Iterator[str]:  # a Python-level __iter__ makes dict(...) / {**x} go through __getitem__
        return iter(list(super().keys()))

    def items(self):  # type: ignore[override]
        return [(name, self[name]) for name in list(super().keys())]

    def values(self):  # type: ignore[override]
        return [self[name] for name in list(super().keys())]

    def pop(self, name: str, *default: Any) -> Any:  # type: ignore[override]
        if name in self._lazy:
            self[name]
        return super().pop(name, *default)

    def copy(self) -> "LazyOutputs":  # type: ignore[override]
        copied = LazyOutputs({k: v for k, v in dict.items(self) if k not in self._lazy}, self._lazy)
        return copied


class FixerHandle:
    """The fixer of a run, loaded once on first use (or eagerly with :meth:`load`); not an ``nn.Module``, so its
    weights are never part of a checkpoint."""

    def __init__(self, config: Any, device: torch.device | str, flag: str = "--model") -> None:
        self.config = config
        self.device = torch.device(device)
        self.flag = flag  # the command-line flag naming the weights, for error messages
        self._fixer: Optional[Any] = None

    @property
    def loaded(self) -> bool:
        """Whether the fixer has been loaded."""
        return self._fixer is not None

    def load(self) -> Any:
        """The fixer, loading it the first time."""
        if self._fixer is None:
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print(f"Loading the fixer ({self.config.summary()}) ...")
            self._fixer = self.config.setup(device=self.device, flag=self.flag)
        return self._fixer


def rgb_image(image: Tensor) -> Tensor:
    """[H, W, 3|4] (float or uint8) -> float [H, W, 3] in [0, 1]; RGBA is composited on white."""
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if image.shape[-1] == 4:
        return image[..., :3] * image[..., 3:] + (1.0 - image[..., 3:])
    return image[..., :3]


class TrainingImageReader:
    """Training image ``i`` [H, W, 3|4] as training read it, through a fresh dataparser built on first use.

    ``ns-render`` sets up the pipeline with ``test_mode="inference"``, in which nerfstudio's datamanagers force the
    dataparser's downscale factor to 1 (to avoid opening images): their training dataset then names the full-size files
    even when the run trained on ``images_N/`` (``--downscale-factor N``, or nerfstudio's automatic factor for large
    images). Render-time references must be the images the run trained on, which may be the only ones a capture ships
    and are cheaper to read, so they are read through the run's own dataparser config, left unforced.

    Args:
        dataparser: the run's dataparser config (its ``data`` set, as the datamanager leaves it).
        num_images: the number of training images; the dataparser must give the same split.
        scale_factor: the training dataset's ``scale_factor`` (the datamanager's ``camera_res_scale_factor``).
    """

    def __init__(self, dataparser: Any, num_images: int, scale_factor: float = 1.0) -> None:
        self.dataparser = dataparser
        self.num_images = int(num_images)
        self.scale_factor = float(scale_factor)
        self._dataset: Optional[Any] = None

    def __call__(self, index: int) -> Tensor:
        if self._dataset is None:
            from nerfstudio.data.datasets.base_dataset import InputDataset

            outputs = self.dataparser.setup().get_dataparser_outputs(split="train")
            if len(outputs.image_filenames) != self.num_images:
                raise RuntimeError(f"The dataparser gives {len(outputs.image_filenames)} training images now but "
                                   f"{self.num_images} in the pipeline's training dataset.")
            self._dataset = InputDataset(outputs, scale_factor=self.scale_factor)
        return self._dataset.get_image_float32(index)


class ReferenceViews:
    """The training cameras and images, to pick each render's reference view (the nearest training camera).

    Args:
        poses: [N, 3, 4] training c2w poses (normalised space).
        load_image: training image ``i`` as [H, W, 3|4].
        cache_size: how many images to keep in memory.
    """

    def __init__(self, poses: Tensor, load_image: Callable[[int], Tensor], cache_size: int = 16) -> None:
        self.poses = poses[:, :3, :4].detach().float().cpu()
        self._load_image = load_image
        self._cache: "OrderedDict[int, Tensor]" = OrderedDict()
        self._cache_size = cache_size

    def nearest(self, c2w: Tensor) -> int:
        """Index of the training camera nearest the c2w pose [3, 4] (translation + rotation-angle distance)."""
        return int(nearest_pose_indices(c2w.detach().float().cpu()[None, :3, :4], self.poses)[0])

    def image(self, index: int) -> Tensor:
        """Training image ``index`` as float [H, W, 3] in [0, 1] (CPU)."""
        if index not in self._cache:
            self._cache[index] = rgb_image(self._load_image(index)).cpu()
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(index)
        return self._cache[index]


class RenderFixer:
    """Applies the fixer to one render with its nearest training image as reference (Difix3D+ post-processing)."""

    def __init__(self, handle: FixerHandle, references: ReferenceViews,
                 fixer_context: Optional[Dict[str, Any]] = None) -> None:
        self.handle = handle
        self.references = references
        self.fixer_context = fixer_context or {}

    def fix(self, rgb: Tensor, camera: Any) -> Tensor:
        """``rgb`` [H, W, 3] rendered at the single camera ``camera`` -> fixed [H, W, 3] on ``rgb``'s device."""
        fixer = self.handle.load()
        reference = self.references.image(self.references.nearest(camera.camera_to_worlds.reshape(-1, 3, 4)[0]))
        image = rgb[..., :3].clamp(0, 1).permute(2, 0, 1)[None]
        kwargs: Dict[str, Any] = {}
        if getattr(fixer, "needs_cameras", False):
            kwargs = {"cameras": camera.reshape((1,)) if camera.ndim == 0 else camera.flatten(), **self.fixer_context}
        with torch.no_grad():
            fixed = fixer.fix(image.to(fixer.device), [reference.permute(2, 0, 1)[None].to(fixer.device)], **kwargs)
        return fixed[0].permute(1, 2, 0).clamp(0, 1).to(rgb)


class RenderFixingMixin:
    """Model mixin: the lazy ``rgb_fixed`` output and its evaluation metrics.

    The model config needs ``render_fixed: bool`` and ``eval_fixed: bool``; the pipeline attaches a
    :class:`RenderFixer` with :meth:`set_render_fixer`.
    """

    _render_fixer: Optional[RenderFixer] = None

    def set_render_fixer(self, render_fixer: Optional[RenderFixer]) -> None:
        """Attach (or detach) what computes ``rgb_fixed``."""
        self._render_fixer = render_fixer

    @property
    def offers_rgb_fixed(self) -> bool:
        """Whether ``get_outputs_for_camera`` lists ``rgb_fixed``."""
        return bool(self.config.render_fixed) and self._render_fixer is not None  # type: ignore[attr-defined]

    def with_rgb_fixed(self, outputs: Dict[str, Any], camera: Any) -> Dict[str, Any]:
        """``outputs`` with a lazy ``rgb_fixed`` entry when render-time fixing is on."""
        if not self.offers_rgb_fixed:
            return outputs
        fixer = self._render_fixer
        assert fixer is not None
        computed = outputs

        def compute() -> Tensor:
            return fixer.fix(computed["rgb"], camera)

        return LazyOutputs(outputs, {RGB_FIXED: compute})

    def fixed_image_metrics(self, outputs: Dict[str, Any], gt_rgb: Tensor) -> Tuple[Dict[str, float],
                                                                                  Dict[str, Tensor]]:
        """``psnr_fixed``/``ssim_fixed``/``lpips_fixed`` of ``rgb_fixed`` against ``gt_rgb`` [H, W, 3], when
        ``eval_fixed`` is on and the output exists; and the ``img_fixed`` comparison image."""
        if not (self.config.eval_fixed and RGB_FIXED in outputs):  # type: ignore[attr-defined]
            return {}, {}
        fixed = outputs[RGB_FIXED]
        gt = torch.moveaxis(gt_rgb, -1, 0)[None]
        pred = torch.moveaxis(fixed, -1, 0)[None].to(gt)
        metrics = {"psnr_fixed": float(self.psnr(gt, pred)),  # type: ignore[attr-defined]
                   "ssim_fixed": float(self.ssim(gt, pred))}  # type: ignore[attr-defined]
        if getattr(self.lpips, "available", True):  # type: ignore[attr-defined]  # offline: no LPIPS weights
            metrics["lpips_fixed"] = float(self.lpips(gt, pred))  # type: ignore[attr-defined]
        return metrics, {"img_fixed": torch.cat([gt_rgb, fixed.to(gt_rgb)], dim=1)}


def scale_learning_rates(optimizers: Any, multipliers: Mapping[str, float]) -> Dict[str, float]:
    """Multiply the learning rate of the named param groups (and their schedulers' base rates) in place.

    Args:
        optimizers: nerfstudio ``Optimizers`` (``.optimizers`` and ``.schedulers`` dicts keyed by param group).
        multipliers: ``{param_group: factor}``; groups the run does not have are skipped.

    Returns:
        ``{param_group: new learning rate}`` of the groups changed.
    """
    changed = {}
    for name, factor in multipliers.items():
        optimizer = optimizers.optimizers.get(name)
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * factor
            if "initial_lr" in group:
                group["initial_lr"] = group["initial_lr"] * factor
        scheduler = optimizers.schedulers.get(name)
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
        changed[name] = float(optimizer.param_groups[0]["lr"])
    return changed
