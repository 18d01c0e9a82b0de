"""``object-mask-data``: nerfstudio captures (``transforms.json``) whose frames carry an object mask.

The capture is an ordinary nerfstudio-data capture (``ns-process-data`` writes one); each training frame additionally
names the mask of the object to remove (``ns-diffusion add-masks`` writes these entries from a folder of masks):

.. code-block:: json

    {"file_path": "images/frame_00003.png", "object_mask_path": "object_masks/frame_00003.png",
     "transform_matrix": [...]}

``object_mask_path`` (object = non-zero, read as :mod:`~ns_diffusion_methods.data.masks` describes) is deliberately
not nerfstudio's ``mask_path`` (non-zero = valid pixel): object pixels are not invalid, they are the pixels to
inpaint. A capture may have both.

**Training and evaluation views.** Evaluation views must be *object-free*: photographs of the scene taken after the
object was physically removed, the only views whose pixels show what should be in the hole. A frame is an evaluation
view when the capture marks it so:

- with split lists in ``transforms.json`` (``train_filenames``, ``val_filenames``, ``test_filenames``, all three, as
  nerfstudio reads them), the frames of ``test_filenames`` are scored by ``ns-eval`` and those of ``val_filenames``
  during training;
- without split lists, frames whose file name contains ``eval`` (and not ``train``) are the evaluation views,
  e.g. ``frame_eval_00003.png``.

Every other frame is a training frame. A capture straight from ``ns-process-data`` (``frame_00001.png``, no lists)
therefore trains on all its frames and has no evaluation view; ``ns-eval`` then stops with a message instead of
scoring frames that show the object. ``--eval-mode fraction`` / ``interval`` / ``all`` would pick evaluation frames
that still show the object, which rewards keeping it, so they are refused.

**Checks before training.** ``transforms.json`` must have the fields nerfstudio-data reads and every image nerfstudio
loads must decode (:func:`~ns_diffusion_methods.data.checks.check_nerfstudio_capture`). Every training frame needs
an object mask of its image's size, neither empty nor full; otherwise the dataparser stops with a
:class:`~ns_diffusion_methods.errors.DataError` naming every offending file, before anything trains. Evaluation frames
may carry the mask of where the object was (``object_mask_path``); it is used for the masked metrics (masked PSNR,
M-LPIPS). If no evaluation frame has one, masked metrics are left out.

A mask has the size of its frame's full-size image (``file_path``; when only ``images_N`` copies exist, the ``w`` x
``h`` of ``transforms.json``) or of the image loaded (``images_N`` when downscaled). Masks are read at the file's
resolution, dilated there (``object_mask_dilation``) and resized (nearest) to the loaded image, so downscaled
``images_N`` folders work without ``masks_N`` copies.

RGBA images are composited on ``alpha_color`` (black by default: what nerfacto's training does with RGBA images and
its default background).

The object mask file names end up in ``DataparserOutputs.metadata["object_mask_filenames"]`` (list, entries None
where a frame has none) with ``metadata["object_mask_dilation"]``;
:class:`~ns_diffusion_methods.data.object_mask_dataset.ObjectMaskDataset` loads them as ``object_mask``.

Import-light (registered through :mod:`ns_diffusion_methods.data.specs`): nerfstudio dataparsers only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type

import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.utils.colors import get_color
from PIL import Image

from ns_diffusion_methods.data.checks import check_nerfstudio_capture, read_nerfstudio_transforms
from ns_diffusion_methods.data.masks import validate_object_masks
from ns_diffusion_methods.errors import DataError, UserFacingError, install_excepthook

#: metadata keys shared by the object-mask dataparsers and dataset
OBJECT_MASK_FILENAMES = "object_mask_filenames"
OBJECT_MASK_DILATION = "object_mask_dilation"

#: nerfstudio's split lists in transforms.json
SPLIT_LISTS = ("train_filenames", "val_filenames", "test_filenames")


def is_evaluation_name(file_path: str) -> bool:
    """Whether a frame of a capture *without* split lists is an object-free evaluation view: its file name contains
    ``eval`` and not ``train`` (nerfstudio's filename split; names with neither are training frames here)."""
    name = Path(file_path).name
    return "eval" in name and "train" not in name


def split_lists_problem(meta: dict, path: Path) -> Optional[str]:
    """Why the split lists of ``transforms.json`` (``path``, contents ``meta``) cannot be used, or None.

    nerfstudio reads the lists only together: training asks for ``train`` and ``val``, ``ns-eval`` for ``test``.
    """
    present = [name for name in SPLIT_LISTS if name in meta]
    if not present or len(present) == len(SPLIT_LISTS):
        return None
    missing = [name for name in SPLIT_LISTS if name not in meta]
    return (f"{path} has {', '.join(present)} but no {', '.join(missing)}: nerfstudio reads the split lists "
            f"together (training uses train_filenames and val_filenames, ns-eval test_filenames). Add the missing "
            f"lists (val_filenames and test_filenames list the object-free views; they may be the same), or remove "
            f"the lists and put \"eval\" in the file names of the object-free views.")


@dataclass
class ObjectMaskDataParserConfig(NerfstudioDataParserConfig):
    """nerfstudio-data with per-frame object masks (``object_mask_path``) for object removal."""

    _target: Type = field(default_factory=lambda: ObjectMaskDataParser)
    eval_mode: Literal["fraction", "filename", "interval", "all"] = "filename"
    """Evaluation views are the object-free views the capture marks: the frames of test_filenames / val_filenames
    when transforms.json has split lists, else frames whose file names contain 'eval'; every other frame trains.
    Only 'filename' (this rule) is accepted: 'fraction', 'interval' and 'all' would score frames that show the
    object."""
    object_mask_dilation: Tuple[int, int] = (0, 0)
    """Dilation of the training object masks: (square kernel size, iterations); (0, 0) = none. SPIn-NeRF dilates
    5x5 five times to cover shadows and segmentation errors."""
    dilate_eval_masks: bool = False
    """Also dilate the evaluation frames' object masks (used only by the masked metrics)."""
    alpha_color: Literal["black", "white", "red", "green", "blue"] = "black"
    """Colour that RGBA images are composited on (black: what nerfacto's training does with RGBA images and its
    default background)."""


class ObjectMaskDataParser(Nerfstudio):
    """nerfstudio-data that also reads and validates each frame's ``object_mask_path`` (see the module docstring)."""

    config: ObjectMaskDataParserConfig
    _capture_checked: bool = False  # transforms.json and the image files are checked once, for all splits

    def _data_dir(self) -> Path:
        return self.config.data.parent if self.config.data.suffix == ".json" else self.config.data

    def _generate_dataparser_outputs(self, split: str = "train"):
        install_excepthook()  # a DataError below ends any ns-* command with an `Error:` line, stock methods too
        if self.config.eval_mode != "filename":
            raise UserFacingError(
                f"object-mask-data does not pick evaluation views by --eval-mode {self.config.eval_mode}: the frames "
                f"it would pick still show the object, and scoring them rewards keeping it. Evaluation views must be "
                f"photographs taken after the object was removed, marked in the capture: list them in test_filenames "
                f"and val_filenames of transforms.json (the other frames in train_filenames), or put \"eval\" in "
                f"their file names. Leave --eval-mode at filename.")
        path, meta = read_nerfstudio_transforms(self.config.data)
        problem = split_lists_problem(meta, path)
        if problem is not None:
            raise DataError(problem)
        if not self._capture_checked:
            check_nerfstudio_capture(self.config.data, parser=self)
            self._capture_checked = True

        if all(name in meta for name in SPLIT_LISTS):
            outputs = super()._generate_dataparser_outputs(split)
        else:
            outputs = self._split_by_name(split)
        data_dir = self._data_dir()
        # the parent maps each frame's file_path through _get_fname; do the same to find each output's frame
        frames: Dict[Path, dict] = {self._get_fname(Path(f["file_path"]), data_dir): f for f in meta["frames"]}
        pairs: List[Tuple[Path, Optional[Path]]] = []
        sizes: List[List[Tuple[int, int]]] = []
        for filename in outputs.image_filenames:
            frame = frames[filename]
            mask = frame.get("object_mask_path")
            full = data_dir / frame["file_path"]
            pairs.append((full if full.is_file() else filename, None if mask is None else data_dir / mask))
            sizes.append(self._mask_sizes(frame, meta, full, filename))

        training = split == "train"
        dilation = self.config.object_mask_dilation if training or self.config.dilate_eval_masks else (0, 0)
        if training:
            if all(mask is None for _, mask in pairs):
                raise DataError(
                    f"No training frame of {path} has an `object_mask_path`: object removal needs, for every "
                    f"training frame, a mask of the object to remove (non-zero = object), e.g. "
                    f"\"object_mask_path\": \"object_masks/frame_00001.png\". `ns-diffusion add-masks --data "
                    f"{data_dir} --masks MASK_FOLDER --output NEW_CAPTURE` writes them from a folder of masks. "
                    f"(nerfstudio's `mask_path` marks valid pixels and is a different thing.)")
            validate_object_masks(pairs, dilation, split="training", sizes=sizes,
                                  hint=f"Fix the masks (or the frames' `object_mask_path`) in {data_dir}. A frame "
                                       f"photographed without the object is an evaluation view: list it in "
                                       f"test_filenames and val_filenames of transforms.json (the others in "
                                       f"train_filenames) or put \"eval\" in its file name; or remove its frame.")
            filenames: Optional[List[Optional[Path]]] = [mask for _, mask in pairs]
        elif all(mask is None for _, mask in pairs):
            filenames = None  # no masks for the evaluation views: masked metrics are left out
        else:
            marked = [index for index, (_, mask) in enumerate(pairs) if mask is not None]
            validate_object_masks([pairs[i] for i in marked], dilation, split=f"{split} (evaluation)",
                                  allow_empty=True, sizes=[sizes[i] for i in marked],
                                  hint=f"Fix the evaluation frames' `object_mask_path` in {data_dir}.")
            filenames = [mask for _, mask in pairs]
        outputs.metadata[OBJECT_MASK_FILENAMES] = filenames
        outputs.metadata[OBJECT_MASK_DILATION] = tuple(int(v) for v in dilation)
        return dataclasses.replace(outputs, alpha_color=get_color(self.config.alpha_color))

    def _split_by_name(self, split: str) -> DataparserOutputs:
        """Outputs of ``split`` for a capture without split lists: evaluation frames are those named ``*eval*``."""
        config = self.config
        # every frame, posed and scaled together exactly as nerfstudio does for any split, then the split's subset
        self.config = dataclasses.replace(config, eval_mode="fraction", train_split_fraction=1.0)
        try:
            outputs = super()._generate_dataparser_outputs("train")
        finally:
            self.config = config
        evaluation = [is_evaluation_name(Path(name).name) for name in outputs.image_filenames]
        if split == "train":
            indices = [i for i, is_eval in enumerate(evaluation) if not is_eval]
        elif split in ("val", "test"):
            indices = [i for i, is_eval in enumerate(evaluation) if is_eval]
        else:
            raise ValueError(f"Unknown dataparser split {split!r} (train, val or test).")
        return _subset(outputs, indices)

    def _mask_sizes(self, frame: dict, meta: dict, full: Path, loaded: Path) -> List[Tuple[int, int]]:
        """Accepted object mask sizes ``(w, h)`` of ``frame``: its full-size image's, then the loaded image's."""
        sizes: List[Tuple[int, int]] = []
        for image in (full, loaded):
            if image.is_file():
                with Image.open(image) as pil_image:
                    sizes.append(pil_image.size)
            elif image == full:
                sizes.append((int(frame.get("w", meta["w"])), int(frame.get("h", meta["h"]))))
        return list(dict.fromkeys(sizes))


def _subset(outputs: DataparserOutputs, indices: Sequence[int]) -> DataparserOutputs:
    """``outputs`` restricted to the images ``indices`` (cameras, file names, nerfstudio's per-image metadata)."""
    index = torch.tensor(list(indices), dtype=torch.long)
    metadata = dict(outputs.metadata)
    if metadata.get("depth_filenames"):
        metadata["depth_filenames"] = [metadata["depth_filenames"][i] for i in indices]
    return dataclasses.replace(
        outputs,
        image_filenames=[outputs.image_filenames[i] for i in indices],
        cameras=outputs.cameras[index],
        mask_filenames=[outputs.mask_filenames[i] for i in indices] if outputs.mask_filenames else None,
        metadata=metadata,
    )
