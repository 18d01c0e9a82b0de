"""Rendering whole views of the model being trained, for dataset updates: no gradients, chunked, OOM-tolerant."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ns_diffusion_methods.errors import ResourceError, is_out_of_memory

#: the smallest ray chunk tried after repeated out-of-memory errors before giving up
MIN_CHUNK = 256


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def render_camera_outputs(model: nn.Module, camera, output_names: Sequence[str] = ("rgb", "accumulation"),
                          min_chunk: int = MIN_CHUNK) -> Dict[str, Tensor]:
    """Render one camera with ``model.get_outputs_for_camera`` in eval mode; halve the ray chunk on GPU OOM.

    nerfstudio's NeRF models render a camera in chunks of ``model.config.eval_num_rays_per_chunk`` rays; a chunk too
    large for the GPU would kill a long run. Here the chunk is halved (down to ``min_chunk``) and the render retried;
    the smaller chunk is kept for the rest of the run. Splat models render whole images and are retried once after
    emptying the CUDA cache.

    Returns:
        The requested outputs that exist, each ``[H, W, C]`` on the model's device.

    Raises:
        ResourceError: still out of memory at the smallest chunk (or on the retry of a whole-image render).
    """
    from nerfstudio.utils.rich_utils import CONSOLE

    config = getattr(model, "config", None)
    retried_whole = False
    with eval_mode(model), torch.no_grad():
        while True:
            try:
                outputs = model.get_outputs_for_camera(camera)
                return {name: outputs[name] for name in output_names if name in outputs}
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
            # out of memory; the failed attempt's tensors went with its traceback at the end of the except block
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            chunk = getattr(config, "eval_num_rays_per_chunk", None)
            if chunk is None and not retried_whole:
                retried_whole = True
                CONSOLE.print("[yellow]Out of GPU memory while rendering: retrying once.[/yellow]")
                continue
            if chunk is None or chunk // 2 < min_chunk:
                size = ("the whole image at once" if chunk is None else
                        f"{chunk} rays per chunk (the smallest tried)")
                raise ResourceError(
                    f"Out of GPU memory rendering a {int(camera.width)}x{int(camera.height)} view of the model "
                    f"with {size}. Free GPU memory (other processes on the GPU, the viewer), use a smaller model "
                    f"or fewer rays per batch, or train on a GPU with more memory.")
            config.eval_num_rays_per_chunk = chunk // 2
            CONSOLE.print(f"[yellow]Out of GPU memory while rendering: retrying with "
                          f"{config.eval_num_rays_per_chunk} rays per chunk.[/yellow]")


def render_views(model: nn.Module, cameras, indices: Optional[Sequence[int]] = None,
                 output_names: Sequence[str] = ("rgb", "accumulation"),
                 description: Optional[str] = None) -> Iterator[Tuple[int, Dict[str, Tensor]]]:
    """Render the cameras ``indices`` of a nerfstudio ``Cameras`` one by one, yielding ``(index, outputs)``.

    Each camera is passed to the model without ``cam_idx`` metadata unless it carries it, so per-training-image
    parameters are only used for real training views. With ``description``, a rich progress bar is shown.
    """
    device = next(model.parameters()).device
    indices = list(range(cameras.shape[0])) if indices is None else list(indices)
    progress = None
    if description:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=True)
        task = progress.add_task(description, total=len(indices))
        progress.start()
    try:
        for index in indices:
            camera = cameras[index: index + 1].to(device)
            yield index, render_camera_outputs(model, camera, output_names)
            if progress is not None:
                progress.advance(task)
    finally:
        if progress is not None:
            progress.stop()
