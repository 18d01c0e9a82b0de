"""What ``ns-diffusion add-masks`` does: give a nerfstudio capture the object masks of a folder (``object_mask_path``).
The command itself is :class:`ns_diffusion_methods.data.commands.AddMasksCommand`.

The path from a phone video to ``mald-nerf``: ``ns-process-data video`` writes the capture (``images/frame_00001.png``,
``transforms.json``); any segmenter writes one mask per frame into a folder; this command matches the masks to the
frames and writes the capture ``object-mask-data`` reads:

- **matching**: a mask belongs to the frame whose image has the same file stem (``frame_00001.jpg`` or
  ``frame_00001.png`` for ``images/frame_00001.png``), in any image format PIL reads; masks matching no frame are
  listed and ignored. Two masks with the same stem are an error.
- **values**: read as everywhere in the package (:mod:`ns_diffusion_methods.data.masks`): label masks (largest value 1)
  mark the object with 1; otherwise a pixel is object when its value is above half the format's range (127 for 8-bit),
  which also reads JPEG-compressed masks as drawn; colour masks: any channel; cut-outs with transparency: opaque =
  object. ``--invert True`` is for masks that mark the object with 0 (nerfstudio's ``mask_path`` convention).
- **size**: a mask has the size of its frame's full-size image (``file_path``; the ``w`` x ``h`` of ``transforms.json``
  when only ``images_N`` copies exist), or of one of its ``images_N`` copies (1/2, 1/4 or 1/8 of it, rounded either
  way): those are enlarged (nearest) to the full size. Any other size is an error.
- **dilation** ``--dilate K N``: a square kernel of K pixels, N times, at the full size (SPIn-NeRF uses 5x5 five
  times on its ``images_4`` masks, i.e. about 20x20 at the full size of its photos).
- **output**: the masks are written as 0/255 PNGs (``object_masks/<stem>.png``) into a copy of the capture
  (``--output``), or into the capture itself (``--in-place True``, after saving ``transforms.json`` as
  ``transforms.json.bak``); each frame with a mask gets ``"object_mask_path"``.
- **frames without an object**: when the capture does not mark its evaluation views itself (no split lists, no
  ``eval`` in file names; what ``ns-process-data`` writes), a frame without a mask, or whose mask is empty, is taken to
  show no object: it becomes an object-free evaluation view, listed in ``val_filenames`` and ``test_filenames``
  (the other frames in ``train_filenames``), and the report names every such frame. When the capture marks its
  evaluation views, those marks are kept: its training frames need a mask each (an error names those without), and
  masks of its evaluation views are written too (where the object was: masked metrics).

Nothing is written when any check fails; every problem is reported at once.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ns_diffusion_methods.data.checks import MAX_LISTED, read_nerfstudio_transforms
from ns_diffusion_methods.data.images import image_size, save_image
from ns_diffusion_methods.data.masks import dilate_mask, mask_from_image, resize_mask
from ns_diffusion_methods.data.object_mask_data import SPLIT_LISTS, is_evaluation_name, split_lists_problem
from ns_diffusion_methods.errors import DataError, UserFacingError

#: downscale factors of ns-process-data's images_N folders whose mask sizes are accepted (and enlarged)
DOWNSCALES = (2, 4, 8)


def _listing(lines: Sequence[str]) -> str:
    shown = [f"  - {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def mask_files(folder: Path) -> Dict[str, Path]:
    """The image files directly in ``folder``, by file stem; several files with one stem are a :class:`DataError`."""
    if not folder.is_dir():
        raise DataError(f"The mask folder {folder} does not exist (or is not a folder). --masks names the folder "
                        f"holding one mask image per frame, named like the frame's image (frame_00001.png).")
    suffixes = {suffix.lower() for suffix in Image.registered_extensions()}
    by_stem: Dict[str, List[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            by_stem.setdefault(path.stem, []).append(path)
    duplicates = [", ".join(p.name for p in paths) for paths in by_stem.values() if len(paths) > 1]
    if duplicates:
        raise DataError(f"{len(duplicates)} frames have several masks in {folder}, so which one to use is unclear:\n"
                        f"{_listing(duplicates)}\nKeep one mask per frame.")
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _full_size(data_dir: Path, frame: dict, meta: dict) -> Tuple[int, int]:
    """``(w, h)`` of a frame's full-size image: its file's, else the intrinsics' (only images_N copies exist)."""
    image = data_dir / frame["file_path"]
    if image.is_file():
        return image_size(image)
    return int(frame.get("w", meta["w"])), int(frame.get("h", meta["h"]))


def _is_downscale(size: Tuple[int, int], full: Tuple[int, int]) -> bool:
    """Whether ``size`` is ``full`` divided by one of :data:`DOWNSCALES`, rounded down or up (as images_N are)."""
    return any(size[0] in (math.floor(full[0] / n), math.ceil(full[0] / n))
               and size[1] in (math.floor(full[1] / n), math.ceil(full[1] / n)) for n in DOWNSCALES)


@dataclass
class FrameMask:
    """One frame and what add-masks found for it."""

    frame: dict
    mask_file: Optional[Path] = None
    mask: Optional[np.ndarray] = None  # [H, W] bool at the full size, dilated
    enlarged: bool = False

    @property
    def has_object(self) -> bool:
        """Whether the frame has a mask with object pixels."""
        return self.mask is not None and bool(self.mask.any())


@dataclass
class AddMasksReport:
    """What :func:`add_masks` wrote, for the report and for tests."""

    capture: Path
    transforms: Path
    backup: Optional[Path]
    training: List[str]
    evaluation: List[str]
    evaluation_without_mask: List[str]
    evaluation_empty_mask: List[str]
    unused_masks: List[Path]
    enlarged: int
    lists_written: bool

    def text(self, masks: Path, dilation: Tuple[int, int]) -> str:
        """The report printed by the command."""
        grown = f", dilated {dilation[0]}x{dilation[0]} x{dilation[1]}" if dilation[0] > 1 and dilation[1] > 0 else ""
        lines = [f"Wrote {self.transforms} with the masks of {masks} (0/255 PNG{grown}).",
                 f"Training frames (with the object and its mask): {len(self.training)}."]
        if self.backup is not None:
            lines.append(f"The previous transforms.json is saved as {self.backup}.")
        if self.enlarged:
            lines.append(f"{self.enlarged} masks had the size of a downscaled copy (images_N) and were enlarged to "
                         f"the full size.")
        if self.lists_written:
            lines.append(f"Object-free evaluation views: {len(self.evaluation)} frames without an object mask, listed "
                         f"in val_filenames and test_filenames of transforms.json (the others in train_filenames). "
                         f"They must be photographs without the object; give a frame that shows it a mask and run "
                         f"add-masks again, or remove its frame:")
            lines.append(_listing([f"{name}: no mask in {masks}" for name in self.evaluation_without_mask]
                                  + [f"{name}: its mask is empty" for name in self.evaluation_empty_mask]))
        elif self.evaluation:
            lines.append(f"Object-free evaluation views (as the capture marks them): {len(self.evaluation)}.")
        else:
            lines.append("No object-free evaluation view: every frame trains, and ns-eval will have nothing to score. "
                         "To evaluate, add photographs taken after removing the object (frames without a mask "
                         "become evaluation views).")
        if self.unused_masks:
            lines.append(f"{len(self.unused_masks)} files in {masks} match no frame and were ignored:")
            lines.append(_listing([path.name for path in self.unused_masks]))
        lines += ["Next:", f"  ns-train mald-nerf --data {self.capture}"]
        if self.evaluation:
            lines.append("  ns-eval --load-config outputs/.../config.yml --output-path eval.json")
        return "\n".join(lines)


def _read_mask(path: Path, invert: bool) -> np.ndarray:
    with Image.open(path) as image:
        mask = mask_from_image(image)
    return ~mask if invert else mask


def _prepare_output(data_dir: Path, output: Optional[Path], in_place: bool, mask_folder: str,
                    masks: Path) -> Path:
    """The capture folder to write into, checked before anything is read (copied later)."""
    if in_place == (output is not None):
        raise UserFacingError("Give either --output NEW_CAPTURE (a copy of the capture with the masks is written "
                              "there) or --in-place True (the capture itself is changed; its transforms.json is "
                              "backed up).")
    if in_place:
        if (data_dir / mask_folder).resolve() == masks.resolve():
            raise UserFacingError(f"--masks {masks} is the folder add-masks writes the normalised masks to. Move the "
                                  f"masks elsewhere, or pass --mask-folder with another name.")
        return data_dir
    assert output is not None
    target = output.resolve()
    if target == data_dir.resolve() or data_dir.resolve() in target.parents:
        raise UserFacingError(f"--output {output} is inside the capture {data_dir}; choose a folder outside it "
                              f"(or use --in-place True).")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserFacingError(f"--output {output} already exists and is not empty; add-masks writes a new capture "
                              f"there. Choose another folder, or remove it.")
    return output


def add_masks(data: Path, masks: Path, output: Optional[Path] = None, in_place: bool = False,
              dilation: Tuple[int, int] = (0, 0), invert: bool = False,
              mask_folder: str = "object_masks") -> AddMasksReport:
    """Match the masks of ``masks`` to the frames of the capture ``data`` and write the result (module docstring).

    Args:
        data: the capture folder (with ``transforms.json``) or its JSON file.
        masks: the folder of mask images, named by frame stem.
        output: write a copy of the capture here (must not exist, or be empty); or None with ``in_place``.
        in_place: write into ``data`` (``transforms.json`` is backed up first).
        dilation: ``(kernel size, iterations)`` of a square dilation at the full size; ``(0, 0)`` = none.
        invert: the masks mark the object with 0.
        mask_folder: folder of the capture the normalised masks are written to.

    Returns:
        What was written.

    Raises:
        DataError: the capture, a mask or the matching is unusable (nothing is written); UserFacingError: the
            options contradict each other.
    """
    transforms, meta = read_nerfstudio_transforms(Path(data))
    data_dir = transforms.parent
    target = _prepare_output(data_dir, output, in_place, mask_folder, Path(masks))
    problem = split_lists_problem(meta, transforms)
    if problem is not None:
        raise DataError(problem)
    files = mask_files(Path(masks))

    # ------------------------------------------------------------------ which frames the capture marks as object-free
    frames = meta["frames"]
    if all(name in meta for name in SPLIT_LISTS):
        listed = {os.path.normpath(name) for key in ("val_filenames", "test_filenames") for name in meta[key]}
        marked_evaluation = [os.path.normpath(f["file_path"]) in listed for f in frames]
        marked = True
    else:
        marked_evaluation = [is_evaluation_name(f["file_path"]) for f in frames]
        marked = any(marked_evaluation)

    # ------------------------------------------------------------------ read, size-check and dilate every matched mask
    problems: List[str] = []
    results: List[FrameMask] = []
    used: set = set()
    for frame in frames:
        result = FrameMask(frame)
        results.append(result)
        mask_file = files.get(Path(frame["file_path"]).stem)
        if mask_file is None:
            continue
        used.add(mask_file)
        result.mask_file = mask_file
        full = _full_size(data_dir, frame, meta)
        try:
            mask = _read_mask(mask_file, invert)
        except (OSError, ValueError) as err:
            problems.append(f"{mask_file}: cannot be read as an image ({type(err).__name__}: {err})")
            continue
        size = (mask.shape[1], mask.shape[0])
        if size != full:
            if not _is_downscale(size, full):
                problems.append(f"{mask_file}: is {size[0]}x{size[1]} (WxH) but its image {frame['file_path']} is "
                                f"{full[0]}x{full[1]} (masks of the images_2/4/8 copies are accepted too)")
                continue
            mask, result.enlarged = resize_mask(mask, full[1], full[0]), True
        mask = dilate_mask(mask, dilation)
        if mask.all():
            problems.append(f"{mask_file}: covers the whole image"
                            f"{' after dilation' if dilation[0] > 1 and dilation[1] > 0 else ''}: nothing is left "
                            f"to reconstruct from (with --invert True? the object must be the smaller part)")
            continue
        result.mask = mask
    if not used:
        examples = ", ".join(sorted(p.name for p in files.values())[:3]) or "no image file"
        raise DataError(f"None of the masks in {masks} is named like a frame of {transforms}: the frames' images are "
                        f"named like {Path(frames[0]['file_path']).name}, the folder holds {examples}. Name each mask "
                        f"by its frame's image (same stem, any image format).")
    if problems:
        raise DataError(f"{len(problems)} masks of {masks} cannot be used (nothing was written):\n"
                        f"{_listing(problems)}\nFix or replace these masks.")

    # ------------------------------------------------------------------ the split
    if marked:
        training = [r for r, is_eval in zip(results, marked_evaluation) if not is_eval]
        evaluation = [r for r, is_eval in zip(results, marked_evaluation) if is_eval]
        missing = [f"{r.frame['file_path']}: " + ("its mask is empty" if r.mask is not None else f"no mask in {masks}")
                   for r in training if not r.has_object]
        if missing:
            raise DataError(f"{transforms} marks its object-free evaluation views (split lists or \"eval\" in file "
                            f"names), and {len(missing)} of its {len(training)} training frames have no object mask "
                            f"(nothing was written):\n{_listing(missing)}\nGive each training frame a mask, or mark "
                            f"the frames photographed without the object as evaluation views.")
    else:
        training = [r for r in results if r.has_object]
        evaluation = [r for r in results if not r.has_object]
        if not training:
            raise DataError(f"Every mask of {masks} that matches a frame of {transforms} is empty: no frame has an "
                            f"object to remove. Check the masks' values (object = above half the range, or 1 in 0/1 "
                            f"masks; --invert True for masks where 0 = object).")

    # ------------------------------------------------------------------ write
    if not in_place:
        shutil.copytree(data_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(mask_folder))
    (target / mask_folder).mkdir(parents=True, exist_ok=True)
    for result in results:
        frame = result.frame
        frame.pop("object_mask_path", None)
        if result.mask is None:
            continue
        name = f"{mask_folder}/{Path(frame['file_path']).stem}.png"
        save_image(result.mask.astype(np.uint8) * 255, target / name)
        frame["object_mask_path"] = name
    lists_written = not marked and bool(evaluation)
    if lists_written:
        meta["train_filenames"] = [r.frame["file_path"] for r in training]
        meta["val_filenames"] = [r.frame["file_path"] for r in evaluation]
        meta["test_filenames"] = list(meta["val_filenames"])
    backup = None
    written = target / transforms.name
    if in_place:
        backup = written.with_name(f"{written.name}.bak")
        count = 1
        while backup.exists():
            count += 1
            backup = written.with_name(f"{written.name}.bak{count}")
        shutil.copy2(written, backup)
    staging = written.with_name(f".{written.name}.partial")
    staging.write_text(json.dumps(meta, indent=4), encoding="utf-8")
    os.replace(staging, written)

    return AddMasksReport(
        capture=target, transforms=written, backup=backup,
        training=[r.frame["file_path"] for r in training], evaluation=[r.frame["file_path"] for r in evaluation],
        evaluation_without_mask=[r.frame["file_path"] for r in evaluation if r.mask_file is None],
        evaluation_empty_mask=[r.frame["file_path"] for r in evaluation if r.mask is not None and not r.has_object],
        unused_masks=sorted(set(files.values()) - used), enlarged=sum(r.enlarged for r in results),
        lists_written=lists_written)
