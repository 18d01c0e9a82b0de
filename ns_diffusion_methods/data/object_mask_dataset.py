"""A nerfstudio dataset whose items also carry the object mask (``object_mask``, bool ``[H, W, 1]``, True = object).

Reads the masks named by ``metadata["object_mask_filenames"]`` (written by ``object-mask-data`` and
``spinnerf-data``), dilated by ``metadata["object_mask_dilation"]`` at the file's resolution and resized (nearest) to
the loaded image. Views without a mask get no ``object_mask`` key.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from nerfstudio.data.datasets.base_dataset import InputDataset

from ns_diffusion_methods.data.masks import load_object_mask
from ns_diffusion_methods.data.object_mask_data import OBJECT_MASK_DILATION, OBJECT_MASK_FILENAMES


class ObjectMaskDataset(InputDataset):
    """``InputDataset`` + ``object_mask`` per item (see the module docstring)."""

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + ["object_mask"]

    @property
    def has_object_masks(self) -> bool:
        """Whether the dataparser supplied object mask file names for this split."""
        return self.metadata.get(OBJECT_MASK_FILENAMES) is not None

    def object_mask(self, image_idx: int, height: int, width: int) -> Optional[torch.Tensor]:
        """The object mask of image ``image_idx`` as bool ``[height, width, 1]``, or None if it has none."""
        filenames = self.metadata.get(OBJECT_MASK_FILENAMES)
        if filenames is None or filenames[image_idx] is None:
            return None
        dilation = tuple(self.metadata.get(OBJECT_MASK_DILATION, (0, 0)))
        mask = load_object_mask(filenames[image_idx], height, width, dilation)  # type: ignore[arg-type]
        return torch.from_numpy(mask)[..., None]

    def get_metadata(self, data: Dict) -> Dict:  # noqa: D102
        height, width = data["image"].shape[:2]
        mask = self.object_mask(int(data["image_idx"]), height, width)
        return {} if mask is None else {"object_mask": mask}
