"""``object-mask-data``: nerfstudio captures (``transforms.json``) whose frames carry an object mask.

The capture is an ordinary nerfstudio-data capture; each frame additionally names the mask of the object to remove:

.. code-block:: json

    {"file_path": "images/frame_train_00003.png", "object_mask_path": "masks/frame_train_00003.png",
     "transform_matrix": [...]}

``object_mask_path`` (non-zero = object) is deliberately not nerfstudio's ``mask_path`` (non-zero = valid pixel):
object pixels are not invalid, they are the pixels to inpaint. A capture may have both.

- ``transforms.json`` must have the fields nerfstudio-data reads and every image must be readable
  (:func:`~ns_diffusion_methods.data.checks.check_nerfstudio_capture`), checked first.
- Every **training** frame needs an object mask of its image's size, neither empty nor full; otherwise the dataparser
  stops with a :class:`~ns_diffusion_methods.errors.DataError` naming every offending file, before anything trains.
- **Evaluation** frames (views where the object is physically absent) may carry the mask of where the object would
  be; it is used for the masked metrics (masked PSNR, M-LPIPS). If no evaluation frame has one, masked metrics are
  left out.
- The train/eval split defaults to ``filename`` (``*train*`` / ``*eval*`` in the file names), since an object-removal
  capture needs its object-free test views marked; split lists in ``transforms.json`` take precedence as usual.

Masks are read at the file's resolution, dilated there (``object_mask_dilation``) and resized (nearest) to the
loaded image, so downscaled ``images_N`` folders work without ``masks_N`` copies.

The object mask file names end up in ``DataparserOutputs.metadata["object_mask_filenames"]`` (list, entries None
where a frame has none) with ``metadata["object_mask_dilation"]``; :class:`~ns_diffusion_methods.data.object_mask_dataset.ObjectMaskDataset`
loads them as ``object_mask``.

Import-light (registered through :mod:`ns_diffusion_methods.data.specs`): nerfstudio dataparsers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.utils.io import load_from_json

from ns_diffusion_methods.data.checks import check_nerfstudio_capture
from ns_diffusion_methods.data.masks import validate_object_masks
from ns_diffusion_methods.errors import DataError

#: metadata keys shared by the object-mask dataparsers and dataset
OBJECT_MASK_FILENAMES = "object_mask_filenames"
OBJECT_MASK_DILATION = "object_mask_dilation"


@dataclass
class ObjectMaskDataParserConfig(NerfstudioDataParserConfig):
    """nerfstudio-data with per-frame object masks (``object_mask_path``) for object removal."""

    _target: Type = field(default_factory=lambda: ObjectMaskDataParser)
    eval_mode: Literal["fraction", "filename", "interval", "all"] = "filename"
    """How to split train and eval frames when transforms.json has no split lists: 'filename' (default here: names
    containing 'train' / 'eval'), 'fraction', 'interval' or 'all'."""
    object_mask_dilation: Tuple[int, int] = (0, 0)
    """Dilation of the training object masks: (square kernel size, iterations); (0, 0) = none. SPIn-NeRF dilates
    5x5 five times to cover shadows and segmentation errors."""
    dilate_eval_masks: bool = False
    """Also dilate the evaluation frames' object masks (used only by the masked metrics)."""


class ObjectMaskDataParser(Nerfstudio):
    """nerfstudio-data that also reads and validates each frame's ``object_mask_path``."""

    config: ObjectMaskDataParserConfig
    _capture_checked: bool = False  # transforms.json and the image files are checked once, for all splits

    def _generate_dataparser_outputs(self, split: str = "train"):
        if not self._capture_checked:
            check_nerfstudio_capture(self.config.data)
            self._capture_checked = True
        outputs = super()._generate_dataparser_outputs(split)
        if self.config.data.suffix == ".json":
            meta, data_dir = load_from_json(self.config.data), self.config.data.parent
        else:
            meta, data_dir = load_from_json(self.config.data / "transforms.json"), self.config.data
        # the parent maps each frame's file_path through _get_fname; do the same to find each output's frame
        frames: Dict[Path, dict] = {self._get_fname(Path(f["file_path"]), data_dir): f for f in meta["frames"]}
        pairs: List[Tuple[Path, Optional[Path]]] = []
        for filename in outputs.image_filenames:
            frame = frames[filename]
            mask = frame.get("object_mask_path")
            pairs.append((data_dir / frame["file_path"], None if mask is None else data_dir / mask))

        training = split == "train"
        dilation = self.config.object_mask_dilation if training or self.config.dilate_eval_masks else (0, 0)
        if training:
            if all(mask is None for _, mask in pairs):
                raise DataError(
                    f"No training frame of {data_dir / 'transforms.json'} has an `object_mask_path`: object removal "
                    f"needs, for every training frame, a mask of the object to remove (non-zero = object), e.g. "
                    f"\"object_mask_path\": \"masks/frame_00001.png\". (nerfstudio's `mask_path` marks valid pixels "
                    f"and is a different thing.)")
            validate_object_masks(pairs, dilation, split="training",
                                  hint=f"Fix the masks (or the frames' `object_mask_path`) in {data_dir}.")
            filenames: Optional[List[Optional[Path]]] = [mask for _, mask in pairs]
        elif all(mask is None for _, mask in pairs):
            filenames = None  # no masks for the evaluation views: masked metrics are left out
        else:
            validate_object_masks([(image, mask) for image, mask in pairs if mask is not None], dilation,
                                  split=f"{split} (evaluation)", allow_empty=True,
                                  hint=f"Fix the evaluation frames' `object_mask_path` in {data_dir}.")
            filenames = [mask for _, mask in pairs]
        outputs.metadata[OBJECT_MASK_FILENAMES] = filenames
        outputs.metadata[OBJECT_MASK_DILATION] = tuple(int(v) for v in dilation)
        return outputs
