"""Checks of a capture before any long work: ``transforms.json`` fields, image files, the evaluation split.

nerfstudio's own dataparser stops on a malformed ``transforms.json`` with a bare ``KeyError: 'frames'`` or an
assertion, and on a missing or corrupt image only when the datamanager loads it, with a traceback. The package's
methods run these checks first (``object-mask-data`` in its dataparser, ``difix3d`` on ``nerfstudio-data`` captures),
so the user reads which file is wrong and what to do before anything trains. Every problem of a kind is collected
and reported at once, so a capture is fixed in one go.

Images are decoded in full (:func:`image_problem`), in a thread pool: opening a file and reading its header does not
find a JPEG cut short by an interrupted copy or with damaged scan data. Checking 300 JPEGs of 1000x560 took 1.0 s
on one CPU core and 0.6 s with the pool on two. Damage the JPEG decoder itself passes over (it conceals some corrupt
blocks and only warns) is not detected.

Import-light (json, numpy, PIL): the dataparsers import it during nerfstudio's plugin discovery.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFile

from ns_diffusion_methods.errors import DataError

#: intrinsics nerfstudio-data needs, at the top level of transforms.json or in every frame
INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")

#: how many offending entries an error message lists before summarising the rest
MAX_LISTED = 12


def _listing(lines: Sequence[str]) -> str:
    shown = list(lines[:MAX_LISTED])
    if len(lines) > MAX_LISTED:
        shown.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return "\n".join(shown)


def image_problem(path: Path) -> Optional[str]:
    """Why the image file ``path`` cannot be used (missing, not an image, truncated, corrupt), or None.

    The file is checked (``Image.verify``: PNG chunk checksums, to the end of the file) and then decoded in full
    (``Image.load``): ``verify`` alone does not decode JPEG data, so a JPEG cut short or with broken scan data would
    pass it and stop the run only when the datamanager loads the image.
    """
    if not path.is_file():
        return "does not exist"
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, struct.error... for bad files
        return f"cannot be read as an image ({type(err).__name__}: {err})"
    return None


def image_problems(paths: Sequence[Path]) -> List[Optional[str]]:
    """:func:`image_problem` of every file of ``paths`` (in order), decoded in a thread pool (PIL decodes without
    holding the GIL). Truncated images count as problems even where PIL was told to load them
    (``ImageFile.LOAD_TRUNCATED_IMAGES``)."""
    load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        workers = max(1, min(8, os.cpu_count() or 1, len(paths)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda path: image_problem(Path(path)), paths))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = load_truncated


def check_image_files(paths: Sequence[Path], hint: str) -> None:
    """Raise :class:`DataError` naming every file of ``paths`` that is missing or not a readable image.

    Args:
        paths: the image files of a capture.
        hint: what to do, appended to the message.
    """
    problems = [f"  - {path}: {reason}" for path, reason in zip(paths, image_problems(paths)) if reason is not None]
    if problems:
        raise DataError(f"{len(problems)} of {len(paths)} images of the capture cannot be used:\n"
                        f"{_listing(problems)}\n{hint}")


def _frame_problem(frame: Any, meta: dict) -> Optional[str]:
    if not isinstance(frame, dict):
        return "is not an object"
    missing = [key for key in ("file_path", "transform_matrix") if key not in frame]
    missing += [key for key in INTRINSICS if key not in frame and key not in meta]
    if missing:
        return f"lacks {', '.join(missing)}"
    try:
        shape = np.asarray(frame["transform_matrix"], dtype=np.float64).shape
    except (TypeError, ValueError):
        shape = None
    if shape not in ((4, 4), (3, 4)):
        return "has a transform_matrix that is not a 4x4 (or 3x4) matrix of numbers"
    return None


def read_nerfstudio_transforms(data: Path) -> Tuple[Path, dict]:
    """Read a capture's ``transforms.json`` and check it has the fields nerfstudio-data needs (not the image files).

    Args:
        data: the capture folder (holding ``transforms.json``) or the JSON file itself, as ``--data`` takes it.

    Returns:
        The ``transforms.json`` file and its contents.

    Raises:
        DataError: the file is missing or not JSON, has no ``frames``, or a frame lacks ``file_path``,
            ``transform_matrix`` or intrinsics; the message names the file.
    """
    data = Path(data)
    path = data if data.suffix == ".json" else data / "transforms.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist. --data must be a nerfstudio capture: a folder with transforms.json "
                        f"(ns-process-data writes one) or the JSON file itself.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}). Repair it or write it again with ns-process-data.") \
            from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{path} has no \"frames\" list (or an empty one): nerfstudio-data reads one entry per image "
                        f"from it, each with \"file_path\" and \"transform_matrix\". Write it again with "
                        f"ns-process-data.")
    absent = [key for key in INTRINSICS
              if key not in meta and not any(isinstance(frame, dict) and key in frame for frame in frames)]
    if absent:
        raise DataError(f"{path} gives no {', '.join(absent)}: the camera intrinsics (focal lengths fl_x, fl_y in "
                        f"pixels, principal point cx, cy, image size w, h) belong at the top level of the file, or in "
                        f"every frame. Add them, or write the file again with ns-process-data.")
    problems: List[str] = []
    for index, frame in enumerate(frames):
        reason = _frame_problem(frame, meta)
        if reason is not None:
            name = frame.get("file_path", "no file_path") if isinstance(frame, dict) else "?"
            problems.append(f"  - frame {index} ({name}): {reason}")
    if problems:
        raise DataError(
            f"{path}: {len(problems)} of {len(frames)} frames cannot be used:\n{_listing(problems)}\n"
            f"Each frame needs \"file_path\" and a 4x4 \"transform_matrix\"; the intrinsics "
            f"{', '.join(INTRINSICS)} are given once at the top level or in every frame. Fix these frames or "
            f"remove them from {path.name}.")
    return path, meta


def loaded_image_file(parser: Any, frame: dict, data_dir: Path) -> Path:
    """The image file a nerfstudio-data dataparser loads for ``frame``: its ``file_path``, or the ``images_N`` copy
    when it downscales (``--downscale-factor N``, or nerfstudio's automatic factor for large images).

    Args:
        parser: a set-up nerfstudio-data dataparser (``nerfstudio.data.dataparsers.nerfstudio_dataparser.Nerfstudio``
            or a subclass), whose ``_get_fname`` picks the file.
        frame: the frame of ``transforms.json``.
        data_dir: the capture folder.
    """
    full = data_dir / frame["file_path"]
    if parser.downscale_factor is None and parser.config.downscale_factor is None and not full.is_file():
        return full  # nerfstudio picks the factor from a full-size image: this one is reported missing
    try:
        return parser._get_fname(Path(frame["file_path"]), data_dir)
    except OSError:
        return full  # the full-size image nerfstudio reads to pick the factor is unreadable: reported as such


def check_nerfstudio_capture(data: Path, parser: Any = None) -> Path:
    """Check a nerfstudio-data capture: ``transforms.json`` has the fields nerfstudio needs, and every image is usable.

    Args:
        data: the capture folder (holding ``transforms.json``) or the JSON file itself, as ``--data`` takes it.
        parser: the set-up nerfstudio-data dataparser that will read the capture: the files checked are those it
            loads (:func:`loaded_image_file`, ``images_N/`` copies when downscaled); default: each frame's
            ``file_path`` in the capture folder.

    Returns:
        The ``transforms.json`` file.

    Raises:
        DataError: as :func:`read_nerfstudio_transforms`, or an image file is missing or unreadable; the message
            names the file.
    """
    path, meta = read_nerfstudio_transforms(data)
    files = [path.parent / frame["file_path"] if parser is None else loaded_image_file(parser, frame, path.parent)
             for frame in meta["frames"]]
    check_image_files(files, hint=f"Restore or replace these files, or remove their frames from {path}.")
    return path


def _require_nonempty(dataset: Any, message: str) -> None:
    """Raise :class:`DataError` with ``message`` when ``dataset`` is None or empty."""
    if dataset is None or len(dataset) == 0:
        raise DataError(message)


def require_evaluation_images(dataset: Any, data: Optional[Path]) -> None:
    """Raise :class:`DataError` when ``ns-eval`` would have no image to score (``dataset`` None or empty).

    Args:
        dataset: the datamanager's evaluation dataset.
        data: the capture (``--data`` of the run), named in the message.
    """
    _require_nonempty(dataset,
        f"The capture {data} has no evaluation images (its test split is empty), so ns-eval has nothing to score. "
        f"Give the capture evaluation views (for example frames whose file names contain \"eval\" with the filename "
        f"split, or a \"test_filenames\" list in transforms.json) and run ns-eval again; the trained run itself is "
        f"fine.")


def require_object_free_views(dataset: Any, data: Optional[Path]) -> None:
    """Raise :class:`DataError` when ``ns-eval`` of an object-removal run has no object-free view to score.

    Args:
        dataset: the datamanager's evaluation dataset.
        data: the capture (``--data`` of the run), named in the message.
    """
    _require_nonempty(dataset,
        f"The capture {data} has no object-free evaluation views, so ns-eval has nothing to score: every frame of it "
        f"is a training frame that shows the object, and scoring those would reward keeping the object. To evaluate, "
        f"photograph the scene again after taking the object away (registered with the other images, e.g. in the "
        f"same ns-process-data run), mark those frames as object-free (list them in \"test_filenames\" and "
        f"\"val_filenames\" of transforms.json, with the other frames in \"train_filenames\", or put \"eval\" in "
        f"their file names) and train again: new frames change how nerfstudio centres and scales the poses.")
