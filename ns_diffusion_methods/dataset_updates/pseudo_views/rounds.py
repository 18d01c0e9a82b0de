"""One pseudo-view round: render every pseudo camera, fix the renders, store the fixed images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ns_diffusion_methods.dataset_updates.pseudo_views.state import PseudoViews
from ns_diffusion_methods.dataset_updates.render import render_camera_outputs
from ns_diffusion_methods.engine.distributed import DistributedContext, run_sharded


@dataclass
class FixRoundResult:
    """What one round produced (on every rank): per pseudo view, the render and the fixed image, [H, W, 3]."""

    renders: Dict[int, Tensor]
    fixed: Dict[int, Tensor]


def _batches(state: PseudoViews, batch_size: int) -> List[List[int]]:
    """Pseudo-view indices grouped by image size, in batches of at most ``batch_size``."""
    by_size: Dict[Tuple[int, int], List[int]] = {}
    for index in range(len(state)):
        by_size.setdefault(tuple(int(v) for v in state.image_sizes[index]), []).append(index)
    return [indices[i:i + batch_size] for indices in by_size.values() for i in range(0, len(indices), batch_size)]


def run_fix_round(
    model: nn.Module,
    state: PseudoViews,
    fixer: Any,
    reference_image: Callable[[int], Tensor],
    step: int,
    batch_size: int = 4,
    fixer_context: Optional[Dict[str, Any]] = None,
    context: Optional[DistributedContext] = None,
    description: Optional[str] = "Fixing pseudo views",
) -> FixRoundResult:
    """Render every pseudo camera at its current pose, fix the renders, and store them in ``state``.

    Rendering uses ``model.get_outputs_for_camera`` in eval mode without gradients (chunked, retried with smaller
    chunks on GPU out-of-memory); the fixer gets batches of up to ``batch_size`` renders of one size, each with its
    nearest training image as reference. With several processes, each rank handles a share of the batches and all
    ranks store all results.

    Args:
        model: the nerfstudio model being trained.
        state: the pseudo views (their poses were just advanced).
        fixer: an object with ``fix(images [B, 3, H, W], references) -> [B, 3, H, W]`` (a
            :class:`~ns_diffusion_methods.fixers.base.Fixer`); a fixer with ``needs_cameras = True`` also gets
            ``cameras=`` (the batch's pseudo cameras) and the entries of ``fixer_context``.
        reference_image: training image ``i`` as [H, W, 3] float in [0, 1].
        step: the training step (recorded with the images).
        batch_size: renders per fixer call.
        fixer_context: extra keyword arguments for camera-aware fixers.
        context: rank and world size (default: the current process group).
        description: progress-bar text (None: no bar).
    """
    batches = _batches(state, batch_size)
    progress = _Progress(description, len(batches))

    def work(batch_index: int) -> Dict[int, Tuple[Tensor, Tensor, Tensor]]:
        indices = batches[batch_index]
        cameras = state.cameras(indices)
        renders, accumulations = [], []
        for position in range(len(indices)):
            outputs = render_camera_outputs(model, cameras[position:position + 1], ("rgb", "accumulation"))
            renders.append(outputs["rgb"][..., :3].clamp(0, 1))
            accumulations.append(outputs.get("accumulation", torch.ones_like(outputs["rgb"][..., :1])))
        images = torch.stack(renders).permute(0, 3, 1, 2)  # [B, 3, H, W]
        references = [reference_image(int(state.reference_indices[i])).to(images)[None].permute(0, 3, 1, 2)
                      for i in indices]
        kwargs: Dict[str, Any] = {}
        if getattr(fixer, "needs_cameras", False):
            kwargs = {"cameras": cameras, **(fixer_context or {})}
        with torch.no_grad():
            fixed = fixer.fix(images, references, **kwargs).permute(0, 2, 3, 1).clamp(0, 1)  # [B, H, W, 3]
        progress.advance()
        return {i: (renders[k].cpu(), fixed[k].cpu(), accumulations[k].clamp(0, 1).cpu())
                for k, i in enumerate(indices)}

    try:
        per_batch = run_sharded(list(range(len(batches))), work, context)
    finally:
        progress.stop()
    result = FixRoundResult(renders={}, fixed={})
    for batch in per_batch.values():
        for index, (render, fixed, accumulation) in batch.items():
            state.images.set(index, fixed, step)
            state.accumulations.set(index, accumulation, step)
            result.renders[index], result.fixed[index] = render, fixed
    return result


class _Progress:
    """A rich progress bar over fixer batches (nothing when ``description`` is None)."""

    def __init__(self, description: Optional[str], total: int) -> None:
        self._bar = None
        if description and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
