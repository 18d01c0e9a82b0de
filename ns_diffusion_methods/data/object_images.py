"""The images of many objects: decoded in parallel into one ``uint8`` tensor, or object by object on demand.

A multi-object dataset at the papers' scale is large: SRN cars' training split is 2 458 objects x 50 views of 128²
pixels, 6.0 GB as ``uint8`` and about 123k PNG files; its test split is 704 objects x 251 views (8.7 GB). So

- :func:`load_object_images` decodes a split into one preallocated ``uint8 [N, H, W, 3]`` tensor, object after object
  (or, with ``workers`` > 1, in a pool of processes whose results are copied in as they arrive: decoding a 128 px
  PNG is mostly Python work in PIL, which holds the GIL, so threads do not help): no concatenation, so the peak is the
  pixels themselves; a progress bar shows objects done and time left;
- :class:`LazyObjectImages` stands for such a tensor without decoding anything up front: indexing it decodes the
  objects the indices fall in (and keeps the last few), so held-out objects, which are evaluated one at a time, cost
  memory only while they are evaluated.

Each object is described by an :class:`~ns_diffusion_methods.data.srn.SRNObjectFiles` (files, no pixels).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import as_completed
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.data.images import resize_views
from ns_diffusion_methods.data.srn import SRNObjectFiles

#: at most this many decoding processes when ``workers`` is -1 (more rarely helps: the disk becomes the limit)
MAX_AUTO_WORKERS = 16


def resolve_workers(workers: int) -> int:
    """``workers`` processes, or one per CPU core (at most :data:`MAX_AUTO_WORKERS`) for -1."""
    if workers == -1:
        return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))
    if workers < 1:
        raise ValueError(f"`workers` must be -1 (one per CPU core) or >= 1, but is {workers}.")
    return workers


def decode_object(obj: SRNObjectFiles, size: Tuple[int, int]) -> Tensor:
    """All views of ``obj`` as ``uint8 [V, H, W, 3]`` at ``size`` (H, W)."""
    return resize_views(torch.from_numpy(obj.read_images()), *size)


def load_object_images(objects: Sequence[SRNObjectFiles], size: Tuple[int, int], workers: int = 1,
                       description: str = "Decoding images", console: Optional[Console] = None) -> Tensor:
    """Every view of ``objects`` (object after object) as one ``uint8 [N, H, W, 3]`` tensor at ``size`` (H, W).

    Args:
        objects: the objects, in dataset order.
        size: (H, W) of the result; views of another size are resized
            (:func:`~ns_diffusion_methods.data.images.resize_views`).
        workers: decoding processes (:func:`~ns_diffusion_methods.data.srn.process_pool`); 1 (default) decodes in
            this process; -1 = one per CPU core (at most :data:`MAX_AUTO_WORKERS`). On 2 cores one process was the
            fastest (``multi-object-loading``): the pool's pickling and the copying compete for the same cores.
        description: the progress bar's label.
        console: where the bar and the closing summary go (nerfstudio's console by default). Nothing is drawn where
            the console is not a terminal; the summary line is always printed for datasets of 1 000 views or more.

    Raises:
        DataError: an unreadable image, or one whose size differs from its object's ``intrinsics.txt`` (the first
            such error; objects not yet started are cancelled).
    """
    from ns_diffusion_methods.data import srn
    from ns_diffusion_methods.engine.progress import progress_bars

    if console is None:
        from nerfstudio.utils.rich_utils import CONSOLE as console  # type: ignore[no-redef]
    height, width = size
    counts = [obj.num_views for obj in objects]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = torch.empty((int(offsets[-1]), height, width, 3), dtype=torch.uint8)

    def store(index: int, views: np.ndarray) -> None:
        out[offsets[index]: offsets[index + 1]] = resize_views(torch.from_numpy(views), height, width)

    start = time.perf_counter()
    processes = resolve_workers(workers)
    if len(objects) < srn.MIN_OBJECTS_FOR_PROCESSES:
        processes = 1
    with progress_bars(console) as progress:
        task = progress.add_task(description, total=len(objects))
        if processes == 1:
            for index, obj in enumerate(objects):
                store(index, obj.read_images())
                progress.advance(task)
        else:
            with srn.process_pool(processes) as pool:
                futures = {pool.submit(_read_images, obj): index for index, obj in enumerate(objects)}
                try:
                    for future in as_completed(futures):
                        store(futures.pop(future), future.result())  # popped: its pixels are freed once stored
                        progress.advance(task)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    if out.shape[0] >= 1000:
        console.print(f"{description}: {out.shape[0]} views of {len(objects)} objects ({out.numel() / 1e9:.2f} GB as "
                      f"uint8) in {time.perf_counter() - start:.1f} s with {processes} process(es).")
    return out


def _read_images(obj: SRNObjectFiles) -> np.ndarray:
    """What a decoding process does: the views of one object as ``uint8 [V, H, W, 3]`` at their file size."""
    return obj.read_images()


class LazyObjectImages:
    """Stands for the ``uint8 [N, H, W, 3]`` tensor of :func:`load_object_images` without decoding anything up front.

    Indexing decodes the objects the indexed views belong to, keeping the ``cache_objects`` most recently used ones.
    Supported indices: an ``int`` (one view ``[H, W, 3]``), a ``slice``, a 1-D integer tensor/list/array (views
    ``[K, H, W, 3]``), and a tuple ``(views, rows, columns)`` of 1-D integer tensors (pixels ``[K, 3]``), the forms the
    multi-object datamanager uses. Thread-safe.
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, objects: Sequence[SRNObjectFiles], size: Tuple[int, int], cache_objects: int = 8):
        if cache_objects < 1:
            raise ValueError(f"`cache_objects` must be >= 1, but is {cache_objects}.")
        self.objects = list(objects)
        self.size = (int(size[0]), int(size[1]))
        self.cache_objects = cache_objects
        counts = torch.tensor([obj.num_views for obj in self.objects], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
        self.object_of_view = torch.repeat_interleave(torch.arange(len(self.objects)), counts)
        self._cache: "OrderedDict[int, Tensor]" = OrderedDict()
        self._lock = threading.Lock()
        self.decoded_objects = 0
        """How many times an object was decoded (a cache miss)."""

    @property
    def shape(self) -> torch.Size:
        return torch.Size((int(self.offsets[-1]), *self.size, 3))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def object_images(self, index: int) -> Tensor:
        """All views of object ``index``, ``uint8 [V, H, W, 3]`` (decoded now unless cached)."""
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        images = decode_object(self.objects[index], self.size)
        with self._lock:
            self._cache[index] = images
            self.decoded_objects += 1
            while len(self._cache) > self.cache_objects:
                self._cache.popitem(last=False)
        return images

    def _views(self, key) -> Tensor:
        views = torch.as_tensor(key, dtype=torch.long).reshape(-1)
        if views.numel() and not (-len(self) <= int(views.min()) and int(views.max()) < len(self)):
            raise IndexError(f"view index out of range for {len(self)} views")
        return views % max(len(self), 1)

    def _gather(self, views: Tensor, rows: Optional[Tensor] = None, cols: Optional[Tensor] = None) -> Tensor:
        shape = (views.numel(), 3) if rows is not None else (views.numel(), *self.size, 3)
        out = torch.empty(shape, dtype=torch.uint8)
        objects = self.object_of_view[views]
        for obj in torch.unique(objects).tolist():
            where = objects == obj
            local = views[where] - self.offsets[obj]
            images = self.object_images(obj)
            out[where] = images[local] if rows is None else images[local, rows[where], cols[where]]  # type: ignore
        return out

    def __getitem__(self, key: Union[int, slice, Tensor, Sequence[int], tuple]) -> Tensor:
        if isinstance(key, (int, np.integer)) or (isinstance(key, Tensor) and key.dim() == 0):
            return self._gather(self._views(int(key)))[0]
        if isinstance(key, slice):
            return self._gather(torch.arange(len(self))[key])
        if isinstance(key, tuple):
            if len(key) != 3:
                raise TypeError("LazyObjectImages takes (views, rows, columns) tuples of 1-D index tensors")
            views, rows, cols = (torch.as_tensor(k, dtype=torch.long).reshape(-1) for k in key)
            return self._gather(self._views(views), rows, cols)
        return self._gather(self._views(key))

    def numpy(self) -> np.ndarray:
        """Every view decoded (the whole split in memory)."""
        return self[:].numpy()


__all__ = ["LazyObjectImages", "decode_object", "load_object_images", "resolve_workers"]
