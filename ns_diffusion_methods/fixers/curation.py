"""Training pairs for a fixer from a nerfstudio run: renders with artifacts against the real images.

Difix3D+'s data curation (paper section 4.1) degrades reconstructions on purpose and pairs their renders with the real
photographs:

- *sparse reconstruction*: train on a subset of the views, render the held-out views (``--split eval``), e.g. a
  nerfacto trained with ``nerfstudio-data --train-split-fraction 0.5``;
- *underfitting*: stop training early (25-75 % of the schedule) and render the training views (``--split train``).

Each pair gets as reference the nearest training image by camera pose (translation distance + rotation angle, the
official ``CameraPoseInterpolator`` distance: :func:`~ns_diffusion_methods.geometry.poses.pose_distance`). The output
is the Difix JSON format read by
``ns-diffusion train-fixer``; several runs can be written into one folder (pairs are merged by name).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional, Union

import torch
from torch import Tensor

from ns_diffusion_methods.data.images import save_image
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.difix.config import DEFAULT_PROMPT
from ns_diffusion_methods.geometry.poses import pose_distance


def nearest_cameras(query: Tensor, pool: Tensor, *, exclude_same_index: bool = False) -> Tensor:
    """For each pose in ``query``, the index of the nearest pose in ``pool`` (optionally never the same index)."""
    distance = pose_distance(query[:, None, :3, :4].double(), pool[None, :, :3, :4].double())  # [M, N]
    if exclude_same_index:
        if len(pool) < 2:
            raise DataError("A reference other than the image itself needs at least 2 training images.")
        count = min(len(query), len(pool))
        distance[torch.arange(count), torch.arange(count)] = float("inf")
    return distance.argmin(dim=1)


@dataclass
class FixerPair:
    """A degraded render, the real image of the same camera, and an optional reference image ([3, H, W] in [0, 1])."""

    name: str
    degraded: Tensor
    clean: Tensor
    reference: Optional[Tensor] = None


def _split_of(name: str, test_fraction: float) -> str:
    """A stable train/test assignment from the pair name (the same pair always lands in the same split)."""
    return "test" if zlib.crc32(name.encode()) / 2**32 < test_fraction else "train"


def write_pairs(pairs: Iterable[FixerPair], output_dir: Union[str, Path], *, test_fraction: float = 0.1,
                prompt: str = DEFAULT_PROMPT) -> Path:
    """Write pairs as PNGs under ``output_dir/images`` and add them to ``output_dir/data.json`` (Difix format).

    Returns:
        The JSON file, for ``ns-diffusion train-fixer --data``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in [0, 1), but got {test_fraction}.")
    output_dir = Path(output_dir)
    index_file = output_dir / "data.json"
    data = json.loads(index_file.read_text()) if index_file.exists() else {}
    data.setdefault("train", {})
    data.setdefault("test", {})
    count = 0
    for pair in pairs:
        if pair.degraded.shape != pair.clean.shape:
            raise DataError(f"Pair {pair.name}: render {tuple(pair.degraded.shape)} and image "
                            f"{tuple(pair.clean.shape)} differ in size.")
        entry = {"image": f"images/{pair.name}_degraded.png", "target_image": f"images/{pair.name}_clean.png",
                 "prompt": prompt}
        save_image(pair.degraded, output_dir / entry["image"])
        save_image(pair.clean, output_dir / entry["target_image"])
        if pair.reference is not None:
            entry["ref_image"] = f"images/{pair.name}_ref.png"
            save_image(pair.reference, output_dir / entry["ref_image"])
        for split in ("train", "test"):
            data[split].pop(pair.name, None)
        data[_split_of(pair.name, test_fraction)][pair.name] = entry
        count += 1
    if count == 0:
        raise DataError("No pair was produced: the chosen split has no images.")
    index_file.parent.mkdir(parents=True, exist_ok=True)
    index_file.write_text(json.dumps(data, indent=2, sort_keys=True))
    return index_file


def _chw(image: Tensor) -> Tensor:
    """[H, W, C] (C = 3 or 4) -> [3, H, W] float on the CPU."""
    return image[..., :3].permute(2, 0, 1).float().cpu().clamp(0, 1)


def render_pairs(pipeline: Any, *, split: Literal["eval", "train"] = "eval", reference: bool = True,
                 max_images: Optional[int] = None, prefix: str = "") -> Iterator[FixerPair]:
    """Render the cameras of ``split`` with a trained nerfstudio pipeline and pair them with their real images.

    Args:
        pipeline: a loaded nerfstudio ``Pipeline`` (``eval_setup``): uses ``datamanager.{train,eval}_dataset`` and
            ``model.get_outputs_for_camera``.
        split: "eval" renders held-out views (sparse reconstruction); "train" renders the training views (for an
            under-fitted model).
        reference: attach the nearest training image (never the rendered view itself).
        max_images: render at most this many views.
        prefix: added to every pair name (keeps runs apart when merged into one folder).
    """
    datamanager = pipeline.datamanager
    dataset = datamanager.eval_dataset if split == "eval" else datamanager.train_dataset
    train_dataset = datamanager.train_dataset
    cameras = dataset.cameras
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    references = nearest_cameras(cameras.camera_to_worlds, train_dataset.cameras.camera_to_worlds,
                                 exclude_same_index=(split == "train")) if reference else None
    model = pipeline.model
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        for index in range(count):
            camera = cameras[index:index + 1].to(device)
            with torch.no_grad():
                rgb = model.get_outputs_for_camera(camera)["rgb"]
            name = f"{prefix}{Path(dataset.image_filenames[index]).stem}"
            ref = _chw(train_dataset.get_image_float32(int(references[index]))) if references is not None else None
            yield FixerPair(name, _chw(rgb), _chw(dataset.get_image_float32(index)), ref)
    finally:
        model.train(was_training)


def pairs_from_run(load_config: Union[str, Path], output_dir: Union[str, Path], *,
                   split: Literal["eval", "train"] = "eval", reference: bool = True, test_fraction: float = 0.1,
                   max_images: Optional[int] = None, prefix: Optional[str] = None) -> Path:
    """Load a nerfstudio run (its ``config.yml``), render ``split`` and write the pairs; returns ``data.json``."""
    from nerfstudio.utils.eval_utils import eval_setup

    load_config = Path(load_config)
    if not load_config.is_file():
        raise DataError(f"{load_config} does not exist; pass the config.yml of a trained nerfstudio run.")
    config, pipeline, _, _ = eval_setup(load_config, test_mode="test")
    if prefix is None:
        prefix = f"{config.experiment_name}-{config.method_name}-{split}-"
    return write_pairs(render_pairs(pipeline, split=split, reference=reference, max_images=max_images,
                                    prefix=prefix), output_dir, test_fraction=test_fraction)
