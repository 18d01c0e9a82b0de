"""A nerfstudio ``Trainer`` whose checkpoints survive a kill at any moment.

Stock nerfstudio 1.1.5 writes ``step-N.ckpt`` in place with ``torch.save``: a process killed during the write leaves a
truncated file that is also the newest one, so ``--load-dir`` then fails on it (and with ``save_only_latest_checkpoint``
the previous good checkpoint may already be gone on the next save). Methods of this package run for hours and carry
state no one wants to recompute (inpainted images, pseudo views, per-object codes), so their trainer

- writes each checkpoint to a temporary file in a sibling folder, flushes it to disk, and moves it into place with an
  atomic ``os.replace``; only then are older checkpoints deleted;
- lets a pipeline put large tensors into its checkpoint piece by piece (:class:`StreamedTensor` values in what its
  ``checkpoint_state_dict()`` returns, when it has that method; otherwise ``state_dict()``), so that no full copy of
  them is made in memory; the file is an ordinary ``torch.save`` checkpoint all the same (``torch.load``,
  ``ns-eval``, ``--load-dir`` read it as usual);
- resumes (``--load-dir``) from the newest checkpoint that is complete, ignoring anything else in the folder;
- says at its start, and records in ``config.yml`` (``untrained_models``), which pretrained diffusion models of the run
  have random weights (``tiny``; :mod:`ns_diffusion_methods.diffusion.untrained`);
- runs long work between iterations (dataset updates, pseudo-view rounds: the pipelines'
  :class:`~ns_diffusion_methods.engine.callbacks.BetweenIterationsCallback` s) outside nerfstudio's iteration timer
  and ETA, logging each run's duration;
- turns on the package's run-time fixes (:func:`~ns_diffusion_methods.compat.enable_for_package_runs`) first;
- leaves no run folder behind when it fails before its first checkpoint: nerfstudio writes ``config.yml`` before the
  data is even loaded, and a folder with a config but nothing to load looks like a run. Only the files a run writes
  (``config.yml``, ``dataparser_transforms.json``, TensorBoard event files, empty folders) are removed, and nothing at
  all once a ``step-N.ckpt`` exists.
"""

from __future__ import annotations

import copy
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Literal, Optional, Tuple, Type

import torch
import tyro
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from ns_diffusion_methods.compat import enable_for_package_runs
from ns_diffusion_methods.diffusion.untrained import untrained_models, untrained_warning
from ns_diffusion_methods.engine.callbacks import BetweenIterationsCallback

_CHECKPOINT = re.compile(r"^step-(\d+)\.ckpt$")


def latest_complete_step(checkpoint_dir: Path) -> Optional[int]:
    """The highest step with a ``step-N.ckpt`` file in ``checkpoint_dir`` (partial writes never land there)."""
    steps = [int(m.group(1)) for name in os.listdir(checkpoint_dir) if (m := _CHECKPOINT.match(name))]
    return max(steps) if steps else None


def partial_dir_of(folder: Path) -> Path:
    """The sibling folder where files of ``folder`` are written before being moved in (``.NAME-partial``)."""
    return folder.parent / f".{folder.name}-partial"


@dataclass(frozen=True)
class StreamedTensor:
    """A checkpoint tensor written in pieces: the file holds one ordinary tensor of ``shape`` and ``dtype``, but it
    is never whole in memory while it is written (see :func:`atomic_torch_save`)."""

    shape: Tuple[int, ...]
    dtype: torch.dtype
    pieces: Callable[[], Iterable[torch.Tensor]]
    """Called once at write time; yields consecutive pieces along the first dimension (any device, converted to
    ``dtype`` on the CPU one at a time) whose concatenation is the tensor."""


def _tensor_leaves(original: Any, layout: Any) -> Iterator[Tuple[Any, torch.Tensor]]:
    """Pairs (value in ``original``, tensor at the same place in ``layout``) for every tensor of ``layout``, which is
    ``original`` saved and loaded back (dicts, lists and tuples are walked)."""
    if isinstance(layout, torch.Tensor):
        yield original, layout
    elif isinstance(layout, dict):
        for key, value in layout.items():
            yield from _tensor_leaves(original[key], value)
    elif isinstance(layout, (list, tuple)):
        for item, value in zip(original, layout):
            yield from _tensor_leaves(item, value)


def _replace_streamed(obj: Any, replace: Callable[[StreamedTensor], torch.Tensor]) -> Any:
    """``obj`` with each :class:`StreamedTensor` replaced by ``replace(it)`` (dicts, lists and tuples are walked and
    copied; dicts keep their attributes, e.g. the ``_metadata`` (module versions) of a state dict)."""
    if isinstance(obj, StreamedTensor):
        return replace(obj)
    if isinstance(obj, dict):
        copied = copy.copy(obj)
        for key, value in obj.items():
            copied[key] = _replace_streamed(value, replace)
        return copied
    if isinstance(obj, list):
        return [_replace_streamed(value, replace) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_replace_streamed(value, replace) for value in obj)
    return obj


def _with_placeholders(obj: Any) -> Any:
    """``obj`` with each :class:`StreamedTensor` replaced by an uninitialised CPU tensor of its shape and dtype (never
    written to, so never given physical memory; ``torch.save`` under ``skip_data`` reads no tensor data)."""
    return _replace_streamed(obj, lambda streamed: torch.empty(streamed.shape, dtype=streamed.dtype))


def has_streamed_tensors(obj: Any) -> bool:
    """Whether a :class:`StreamedTensor` is anywhere in ``obj`` (dicts, lists and tuples are searched)."""
    if isinstance(obj, StreamedTensor):
        return True
    if isinstance(obj, dict):
        return any(has_streamed_tensors(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_streamed_tensors(value) for value in obj)
    return False


def streaming_supported() -> bool:
    """Whether this torch can write :class:`StreamedTensor` s piece by piece (``skip_data`` and storage offsets of
    torch >= 2.6); older versions write them whole (:func:`_materialized`)."""
    version = tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    return hasattr(torch.serialization, "skip_data") and version >= (2, 6)


def _materialized(obj: Any) -> Any:
    """``obj`` with each :class:`StreamedTensor` replaced by its whole tensor (the fallback of older torch versions:
    the same file, at the cost of one full copy in memory while it is written)."""
    if not has_streamed_tensors(obj):
        return obj
    return _replace_streamed(obj, lambda streamed: torch.cat(
        [piece.detach().to("cpu", streamed.dtype) for piece in streamed.pieces()]).reshape(streamed.shape))


def _pwrite_all(fd: int, data: torch.Tensor, offset: int) -> int:
    """Write the bytes of the contiguous CPU tensor ``data`` at ``offset`` of file ``fd``; returns the byte count."""
    view = memoryview(data.reshape(-1).view(torch.uint8).numpy())
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _save_streamed(obj: Any, handle) -> None:
    """``torch.save(obj, handle)`` where ``obj`` holds :class:`StreamedTensor` s, written piece by piece.

    torch writes the checkpoint's structure with room for every tensor (``torch.serialization.skip_data``); the
    offsets of that room are read back (``torch.load(map_location="meta")``) and each tensor's bytes written there:
    ordinary tensors whole (one at a time, as ``torch.save`` does), streamed ones piece by piece.
    """
    with torch.serialization.skip_data():
        torch.save(_with_placeholders(obj), handle)
    handle.flush()
    layout = torch.load(handle.name, map_location="meta", weights_only=False)
    fd = handle.fileno()
    written = set()
    for original, meta in _tensor_leaves(obj, layout):
        offset = getattr(meta.untyped_storage(), "_checkpoint_offset", None)
        if offset is None:
            raise RuntimeError(f"This torch ({torch.__version__}) does not report where tensors lie in a checkpoint "
                               f"(storage._checkpoint_offset); checkpoints with streamed tensors need torch >= 2.6.")
        if offset in written:  # a storage shared by several tensors
            continue
        written.add(offset)
        expected = meta.untyped_storage().nbytes()
        if isinstance(original, StreamedTensor):
            size = 0
            for piece in original.pieces():
                size += _pwrite_all(fd, piece.detach().to("cpu", original.dtype).contiguous(), offset + size)
            if size != expected:
                raise RuntimeError(f"A streamed checkpoint tensor of shape {original.shape} yielded {size} bytes, "
                                   f"expected {expected}.")
        else:
            storage = original.untyped_storage()
            storage = storage if storage.device.type == "cpu" else storage.cpu()
            _pwrite_all(fd, torch.empty(0, dtype=torch.uint8).set_(storage), offset)
    with zipfile.ZipFile(handle.name) as archive:
        records = sum(1 for name in archive.namelist() if name.partition("/")[2].startswith("data/"))
    if records != len(written):
        raise RuntimeError(f"{records} tensors were written to {handle.name}, but only {len(written)} of them could be "
                           f"filled: tensors inside objects other than dicts, lists and tuples cannot be streamed.")


def contribute_to_checkpoint(obj: Any) -> None:
    """On a rank that does not write the checkpoint: run every :class:`StreamedTensor` of ``obj`` through its
    pieces, in the order :func:`atomic_torch_save` writes them on the main rank (dicts in insertion order, lists and
    tuples in order), so that pieces gathered from all ranks (one collective each) line up."""

    def drain(streamed: StreamedTensor) -> None:
        for _ in streamed.pieces():
            pass

    _replace_streamed(obj, drain)


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to ``path`` so that ``path`` is either absent, the old file, or the complete new file.

    :class:`StreamedTensor` s in ``obj`` are written piece by piece (the file is an ordinary ``torch.save`` file).
    Truncated files left in the partial folder by an earlier, killed process are removed first.
    """
    partial_dir = partial_dir_of(path.parent)
    partial_dir.mkdir(parents=True, exist_ok=True)
    pid = str(os.getpid())
    for leftover in partial_dir.iterdir():
        if leftover.is_file() and leftover.suffix.lstrip(".") != pid:
            leftover.unlink(missing_ok=True)
    partial = partial_dir / f"{path.name}.{pid}"
    with open(partial, "wb") as handle:
        if has_streamed_tensors(obj) and streaming_supported():
            _save_streamed(obj, handle)
        else:
            torch.save(_materialized(obj), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


@dataclass
class DiffusionTrainerConfig(TrainerConfig):
    """nerfstudio's ``TrainerConfig`` with atomic checkpoints and resume from the newest complete checkpoint."""

    _target: Type = field(default_factory=lambda: DiffusionTrainer)
    untrained_models: tyro.conf.Suppress[List[str]] = field(default_factory=list)
    """Set when training starts (not a flag): the run's pretrained diffusion models that have random weights
    (``tiny``). Its results are then not those of the method."""


class DiffusionTrainer(Trainer):
    """nerfstudio ``Trainer`` with atomic checkpoint writes, untrained-model warnings and no run folder left by a run
    that failed early (see the module docstring)."""

    config: DiffusionTrainerConfig

    def __init__(self, config: DiffusionTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        enable_for_package_runs()  # before anything can fail: user errors as `Error:` lines, checkpoint loading
        super().__init__(config, local_rank=local_rank, world_size=world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """Warn about untrained models, then nerfstudio's setup (data, pipeline, optimizers, viewer, checkpoint)."""
        self._record_untrained_models()
        try:
            super().setup(test_mode)
        except Exception:
            self._discard_unfinished_run()
            raise

    def train(self) -> None:
        """nerfstudio's training loop; a failure before the first checkpoint removes the run folder."""
        try:
            super().train()
        except Exception:
            self._discard_unfinished_run()
            raise

    def _update_viewer_state(self, step: int) -> None:
        """Run the pipeline's :class:`~ns_diffusion_methods.engine.callbacks.BetweenIterationsCallback` s, then
        nerfstudio's viewer update.

        nerfstudio calls this once per step right after the timed iteration (on every rank), so long work between
        iterations (dataset updates, pseudo-view rounds) stays out of ``Train Iter (time)``, ``Train Rays / Sec`` and
        the ETA, and each run of it is logged with its own duration.
        """
        for callback in self.callbacks:
            if isinstance(callback, BetweenIterationsCallback):
                with self.train_lock:
                    callback.run_between_iterations(step)
        super()._update_viewer_state(step)  # nerfstudio's: only with a viewer, on the main process

    def _record_untrained_models(self) -> None:
        """Say which models are untrained and write ``config.yml`` again with them (nerfstudio wrote it already)."""
        untrained = untrained_models(self.config.pipeline)
        self.config.untrained_models = untrained
        if untrained and comms.is_main_process():
            CONSOLE.print(f"[bold yellow]Warning: {untrained_warning(untrained)}[/bold yellow]")
            if (self.base_dir / "config.yml").is_file():
                self.config.save_config()

    def _discard_unfinished_run(self) -> None:
        """Remove what a run that failed before its first checkpoint wrote (see the module docstring)."""
        if not comms.is_main_process():
            return
        if self.checkpoint_dir.is_dir() and latest_complete_step(self.checkpoint_dir) is not None:
            return  # resumable work: keep everything
        base = self.base_dir
        written = [base / "config.yml", base / "dataparser_transforms.json", *base.glob("events.out.tfevents.*")]
        written = [path for path in written if path.is_file()]
        for path in written:
            path.unlink()
        partial = partial_dir_of(self.checkpoint_dir)
        output_dir = Path(self.config.output_dir).resolve()
        for folder in (self.checkpoint_dir, partial, base, base.parent, base.parent.parent):  # run, method, experiment
            inside = output_dir in folder.resolve().parents  # never --output-dir itself or anything above it
            if inside and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if written:
            CONSOLE.print(f"The run failed before its first checkpoint: removed {', '.join(p.name for p in written)} "
                          f"from {base}.")

    def _load_checkpoint(self) -> None:
        if self.config.load_dir is not None and self.config.load_step is None:
            step = latest_complete_step(Path(self.config.load_dir))
            if step is not None:
                self.config.load_step = step
        super()._load_checkpoint()

    def save_checkpoint(self, step: int) -> None:
        """Save pipeline (its ``checkpoint_state_dict()`` if it has one, else ``state_dict()``), optimizers,
        schedulers and scaler atomically, then prune older checkpoints if asked.

        The main process writes. A pipeline whose state is spread over the ranks (``checkpoint_needs_all_ranks``:
        its streamed tensors gather pieces from every rank) gets ``checkpoint_state_dict()`` called on every rank, and
        the other ranks hand over their pieces in the order the main process writes them."""
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        if not comms.is_main_process():
            if getattr(pipeline, "checkpoint_needs_all_ranks", False):
                contribute_to_checkpoint(pipeline.checkpoint_state_dict())
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        checkpoint_state = getattr(pipeline, "checkpoint_state_dict", pipeline.state_dict)
        atomic_torch_save({
            "step": step,
            "pipeline": checkpoint_state(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }, ckpt_path)
        if self.config.save_only_latest_checkpoint:
            for f in self.checkpoint_dir.glob("step-*.ckpt"):
                if f != ckpt_path:
                    f.unlink()
