"""``ns-diffusion`` commands on captures: ``add-masks`` (the logic is in :mod:`ns_diffusion_methods.data.add_masks`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import tyro
from typing_extensions import Annotated

from ns_diffusion_methods.data.add_masks import add_masks


@dataclass
class AddMasksCommand:
    """Add object masks from a folder to a nerfstudio capture (``object_mask_path`` per frame) for mald-nerf.

    Masks are matched to frames by file stem; frames without a mask (or with an empty one) become object-free
    evaluation views unless the capture marks its evaluation views itself. Prints what it did and the ns-train
    command to run next.
    """

    data: Annotated[Path, tyro.conf.arg(metavar="DIR")]
    """The capture: a folder with transforms.json, as ns-process-data writes it."""
    masks: Annotated[Path, tyro.conf.arg(metavar="DIR")]
    """Folder of object masks, one per frame, named by the frame image's stem (frame_00001.png or .jpg for
    images/frame_00001.png). Object = value above half the format's range (1 in 0/1 masks), any colour channel;
    masks may have the size of the full images or of their images_2/4/8 copies."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Write a copy of the capture with the masks here (a new or empty folder)."""
    in_place: bool = False
    """Write into --data instead of a copy; transforms.json is saved as transforms.json.bak first."""
    dilate: Tuple[int, int] = (0, 0)
    """Grow each mask by a square kernel of K pixels, N times, at the full image size: K N (SPIn-NeRF: 5 5 on its
    quarter-size images); 0 0 = as drawn."""
    invert: bool = False
    """The masks mark the object with 0 (black) and everything else with non-zero values."""
    mask_folder: str = "object_masks"
    """Folder of the capture the normalised masks (0/255 PNG) are written to."""

    def main(self) -> int:
        """Add the masks and print the report."""
        report = add_masks(self.data, self.masks, self.output, self.in_place, tuple(self.dilate), self.invert,
                           self.mask_folder)
        print(report.text(self.masks, tuple(self.dilate)))
        return 0
