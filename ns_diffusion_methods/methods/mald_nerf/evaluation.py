"""MALD-NeRF evaluation on the object-free test views (``ns-eval``), following the paper's protocol (SPIn-NeRF's test
views).

Per test view (rendered vs ground truth photographed without the object):

- full frame: ``psnr``, ``ssim``, ``lpips``;
- inside the test view's object mask (where the object was): ``masked_psnr``; M-LPIPS in both published
  definitions, ``m_lpips`` (MALD-NeRF: pixels outside the mask blacked out in both images) and ``m_lpips_bbox``
  (SPIn-NeRF: both images cropped to the mask's bounding box); ``mask_sharpness`` (variance of the Laplacian inside
  the mask, with ``mask_sharpness_gt`` for reference).

Over the set of test views: ``fid`` and ``kid`` between rendered and ground-truth views, with the KID subset size at
most the number of views (``kid_std`` only when the subsets are smaller than the set: when every subset is the whole
set there is no spread to report).

Metrics whose weights cannot be obtained offline (LPIPS' backbone, Inception) are left out of the results, never
replaced. Views without an object mask contribute to the full-frame metrics only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ns_diffusion_methods.metrics import FidKid, default_lpips, m_lpips_blackout, masked_psnr, object_removal_metrics


def _nchw(image: Tensor) -> Tensor:
    """``[H, W, C]`` -> ``[1, C, H, W]`` float."""
    return image.permute(2, 0, 1)[None].float()


def masked_image_metrics(rgb: Tensor, gt: Tensor, mask: Tensor, lpips: Optional[nn.Module] = None) -> Dict[str, float]:
    """Masked PSNR (and the blackout M-LPIPS when ``lpips`` is available) of one ``[H, W, 3]`` view.

    Used by in-training evaluation; empty masks give no values.
    """
    rendered, target = _nchw(rgb).clamp(0, 1), _nchw(gt)
    masks = _nchw(mask.bool())
    values = {"masked_psnr": float(masked_psnr(rendered, target, masks))}
    if lpips is not None and getattr(lpips, "available", True):
        values["m_lpips"] = float(m_lpips_blackout(rendered, target, masks, lpips))
    return {key: value for key, value in values.items() if math.isfinite(value)}


def _save_png(image: Tensor, path: Path) -> None:
    from PIL import Image

    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    Image.fromarray(array).save(path)


def aggregate(per_view: List[Dict[str, float]], get_std: bool) -> Dict[str, float]:
    """Mean (and standard deviation) of each metric over the views that have it."""
    keys = sorted({key for values in per_view for key in values})
    results: Dict[str, float] = {}
    for key in keys:
        column = torch.tensor([values[key] for values in per_view if key in values], dtype=torch.float64)
        results[key] = float(column.mean())
        if get_std:
            results[f"{key}_std"] = float(column.std(unbiased=False))
    return results


@torch.no_grad()
def evaluate_test_views(pipeline: Any, output_path: Optional[Path] = None, get_std: bool = False,
                        kid_subset_size: int = 1000) -> Dict[str, Any]:
    """Render every test view of ``pipeline`` and compute the metrics of the module docstring.

    Args:
        pipeline: a trained :class:`~ns_diffusion_methods.methods.mald_nerf.pipeline.MaldNerfPipeline` (eval mode).
        output_path: if given, each view's render, ground truth and mask are written there as PNGs
            (``{index:04d}_rendered.png``, ``_gt.png``, ``_mask.png``).
        get_std: also report each per-view metric's standard deviation (``ns-eval`` asks for it).
        kid_subset_size: KID subset size, clamped to the number of views.

    Returns:
        metric -> value, plus ``num_rays_per_sec`` and ``fps`` like nerfstudio's evaluation.
    """
    from nerfstudio.utils.rich_utils import CONSOLE
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    model = pipeline.model
    device = pipeline.device
    loader = pipeline.datamanager.fixed_indices_eval_dataloader
    lpips = default_lpips(device)
    fid_kid = FidKid(kid_subset_size=kid_subset_size, device=device)
    if output_path is not None:
        output_path = Path(output_path)
        output_path.mkdir(parents=True, exist_ok=True)
    per_view: List[Dict[str, float]] = []
    num_rays, render_time = 0, 0.0
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=CONSOLE, transient=True) as progress:
        task = progress.add_task("Evaluating the test views", total=len(loader))
        for index, (camera, batch) in enumerate(loader):
            start = time.perf_counter()
            outputs = model.get_outputs_for_camera(camera=camera)
            render_time += time.perf_counter() - start
            height, width = int(camera.height), int(camera.width)
            num_rays += height * width
            rgb = outputs["rgb"].clamp(0, 1)
            gt = model.renderer_rgb.blend_background(batch["image"].to(device))[..., :3]
            rendered, target = _nchw(rgb), _nchw(gt)
            if "object_mask" in batch:
                mask = batch["object_mask"].to(device)
                per_view.append(object_removal_metrics(rendered, target, _nchw(mask.bool()), lpips=lpips))
            else:
                from ns_diffusion_methods.metrics import psnr, ssim

                values = {"psnr": float(psnr(rendered, target)), "ssim": float(ssim(rendered, target))}
                if getattr(lpips, "available", True):
                    values["lpips"] = float(lpips(rendered, target))
                per_view.append(values)
            fid_kid.update(rendered, target)
            if output_path is not None:
                _save_png(rgb, output_path / f"{index:04d}_rendered.png")
                _save_png(gt, output_path / f"{index:04d}_gt.png")
                if "object_mask" in batch:
                    mask = batch["object_mask"].float().expand(height, width, 3)
                    _save_png(mask, output_path / f"{index:04d}_mask.png")
            progress.advance(task)
    results = aggregate(per_view, get_std)
    if fid_kid.num_images >= 2:
        results.update(fid_kid.compute())
    results["num_rays_per_sec"] = num_rays / max(render_time, 1e-9)
    results["fps"] = len(per_view) / max(render_time, 1e-9)
    return results
