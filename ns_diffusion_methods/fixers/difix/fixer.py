"""Difix behind the :class:`~ns_diffusion_methods.fixers.base.Fixer` interface: any image size, batching, precision
and out-of-memory handling around :class:`~ns_diffusion_methods.fixers.difix.model.DifixModel`."""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ns_diffusion_methods.errors import ResourceError, is_out_of_memory
from ns_diffusion_methods.fixers.base import Fixer, check_fixer_inputs, resize_images
from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig, resolve_dtype
from ns_diffusion_methods.fixers.difix.model import DifixModel


def working_size(height: int, width: int, multiple: int) -> Tuple[int, int]:
    """(height, width) rounded to the nearest multiples of ``multiple`` (at least one multiple)."""
    return (max(multiple, int(round(height / multiple)) * multiple),
            max(multiple, int(round(width / multiple)) * multiple))


class DifixFixer(Fixer):
    """Difix behind the :class:`~ns_diffusion_methods.fixers.base.Fixer` interface.

    - any image size: the network runs at the size rounded to a multiple of 8 (or ``config.resolution``), and the
      output is resized back to the input size (exact when no rounding is needed);
    - references of any size and number per image (resized to the image's working size); images with equal
      reference counts are batched, ``config.chunk_size`` at a time, to bound memory; after a GPU out-of-memory error
      the batch is halved (down to one image) and retried with the same noise, so the result does not change;
    - weights in ``config.dtype`` (bf16 on CUDA by default; diffusers' reduced-precision path, faster than autocast),
      SDPA attention, ``torch.inference_mode``; deterministic for a seed.

    Args:
        config: the fixer configuration.
        device: where to run.
        model: an already built :class:`DifixModel` (default: ``DifixModel.from_pretrained(config.model)``).
    """

    def __init__(self, config: DifixFixerConfig, device: Union[str, torch.device] = "cpu",
                 model: Optional[DifixModel] = None, flag: str = "--model") -> None:
        super().__init__(config, device, flag)
        if config.chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, but got {config.chunk_size}.")
        self.dtype = resolve_dtype(config.dtype, self.device)
        if model is None:
            model = DifixModel.from_pretrained(config.model, prompt=config.prompt, timestep=config.timestep,
                                               flag=flag)
        self.model = model.prepare_for_inference(self.device, self.dtype)
        self._warned_references = False
        #: images per network pass: ``config.chunk_size``, halved for the rest of the run after an out-of-memory error
        self.chunk_size = config.chunk_size

    @property
    def uses_references(self) -> bool:
        return self.model.reference_views

    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        check_fixer_inputs(images, references)
        if generator is None:
            generator = torch.Generator().manual_seed(self.config.seed if seed is None else seed)
        batch, _, height, width = images.shape
        refs: List[Optional[Tensor]] = list(references) if references is not None else [None] * batch
        if not self.model.reference_views and any(r is not None and len(r) for r in refs):
            if not self._warned_references:
                warnings.warn(f"The fixer model `{self.config.model}` was trained without reference views; the "
                              f"reference images are ignored (use nvidia/difix_ref to use them).", stacklevel=2)
                self._warned_references = True
            refs = [None] * batch
        counts = [0 if r is None else len(r) for r in refs]
        size = tuple(self.config.resolution) if self.config.resolution is not None else \
            working_size(height, width, self.model.size_multiple)
        if size[0] % self.model.size_multiple or size[1] % self.model.size_multiple:
            raise ValueError(f"`resolution` {size} must be divisible by {self.model.size_multiple}.")

        output = torch.empty_like(images)
        start = 0
        while start < batch:  # chunks of consecutive images with the same number of references
            stop = start + 1
            while stop < batch and stop - start < self.chunk_size and counts[stop] == counts[start]:
                stop += 1
            views = [resize_images(images[start:stop].float(), size)]  # [b, 3, h, w]
            if counts[start]:
                views += [torch.stack([resize_images(refs[i][v:v + 1].float().to(images.device), size)[0]
                                       for i in range(start, stop)]) for v in range(counts[start])]
            stacked = torch.stack(views, dim=1).to(self.device)  # [b, V, 3, h, w], view 0 = the render
            noise_state = generator.get_state()
            try:
                with torch.inference_mode():
                    fixed = self.model(stacked * 2.0 - 1.0, generator=generator, decode_views="first")[:, 0]
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                fixed = None  # the failed pass's activations go with the traceback at the end of this block
            if fixed is None:
                del stacked, views
                generator.set_state(noise_state)  # the retry draws the same posterior noise
                self._halve_chunk(stop - start, size, counts[start])
                continue
            fixed = (fixed.float() + 1.0) / 2.0
            output[start:stop] = resize_images(fixed, (height, width)).clamp(0.0, 1.0).to(output)
            start = stop
        return output

    def _halve_chunk(self, failed: int, size: Tuple[int, int], references: int) -> None:
        """After an out-of-memory error on ``failed`` images: half as many per pass from now on, or give up at one."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if failed <= 1:
            raise ResourceError(
                f"Out of GPU memory fixing a single {size[1]}x{size[0]} image with {references} reference view(s) "
                f"(`{self.config.model}`, {self.dtype}). Free GPU memory (other processes on the GPU), lower the "
                f"working size (resolution) or the number of reference views, use bf16, or use a GPU with more "
                f"memory.")
        self.chunk_size = failed // 2
        warnings.warn(f"Out of GPU memory fixing {failed} images at once: retrying with {self.chunk_size} per pass.",
                      stacklevel=3)

