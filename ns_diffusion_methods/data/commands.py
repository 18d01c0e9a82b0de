"""``ns-diffusion`` commands on captures: ``add-masks``, ``masks`` and ``masks-viewer`` (the logic is in
:mod:`ns_diffusion_methods.data.add_masks`, :mod:`ns_diffusion_methods.data.box_masks` and
:mod:`ns_diffusion_methods.data.masks_viewer`)."""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import tyro
from typing_extensions import Annotated

from ns_diffusion_methods.data.add_masks import add_masks
from ns_diffusion_methods.errors import UserFacingError


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


@dataclass
class MasksCommand:
    """Object masks for every frame from a 3D box around the object, with the depth of a run trained on the capture
    (nerfacto or splatfacto): no painting. Writes the capture with object_mask_path entries for mald-nerf, as
    add-masks does.

    In the viewer of the run, open "Crop Viewport", tick "Enable" and move the box (or type "Crop center", "Crop
    scale" and "Crop rotation") until it holds the object and little else; pass those nine numbers to --box. Or place
    the box and write the masks in the viewer itself: ns-diffusion masks-viewer.
    """

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """config.yml of a run trained on the capture (a quick nerfacto is enough: 5-10k steps)."""
    box: Annotated[str, tyro.conf.arg(metavar="CX,CY,CZ,SX,SY,SZ[,RX,RY,RZ]")]
    """The box: centre, side lengths and rotation (roll, pitch, yaw in radians), as the viewer's Crop center, Crop
    scale and Crop rotation show them. Write --box=-0.5,... when the first number is negative."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Write a copy of the capture with the masks here (a new or empty folder)."""
    in_place: bool = False
    """Write into the capture itself; its transforms.json is saved as transforms.json.bak first."""
    data: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """The capture to write masks for; default: the one the run was trained on."""
    frame: Literal["run", "capture"] = "run"
    """Coordinates of --box: run = the run's (what the viewer shows), capture = those of the capture's
    transforms.json (before nerfstudio orients and scales the poses)."""
    min_accumulation: float = 0.5
    """A pixel can be object only where the run is at least this opaque (background sky and holes are not)."""
    min_component: float = 0.05
    """Pieces of a view's mask smaller than this fraction of the mask are dropped (floaters inside the box)."""
    dilate: Tuple[int, int] = (5, 5)
    """Grow each mask by a square kernel of K pixels, N times, at the run's render size: K N (SPIn-NeRF: 5 5);
    0 0 = none."""
    floor_margin: float = 0.02
    """Surface closer than this fraction of the box's height to the floor under the box (the plane fitted near the
    box's bottom face, when one stands out there) is not object; 0 = keep the floor."""
    shadow_darkening: float = 0.2
    """The object's shadow joins its mask: floor around the object's footprint, touching it, whose colour (the median
    over the views) is at least this fraction darker than the floor around; needs the floor rule; 0 = the object
    alone."""
    supersample: int = 1
    """Render each view with S x S rays per pixel; a pixel is object when at least half of its rays end in the box."""

    def main(self) -> int:
        """Derive the masks, write the capture and print the report."""
        from ns_diffusion_methods.data.box_masks import Box, BoxMaskSettings, masks_from_run

        box = Box.parse(self.box)
        if not self.load_config.is_file():
            raise UserFacingError(f"--load-config {self.load_config} does not exist; pass the config.yml of a run "
                                  f"trained on the capture (outputs/<capture>/nerfacto/<time>/config.yml).")
        settings = BoxMaskSettings(frame=self.frame, min_accumulation=self.min_accumulation,
                                   min_component=self.min_component, dilation=tuple(self.dilate),
                                   floor_margin=self.floor_margin, shadow_darkening=self.shadow_darkening,
                                   supersample=self.supersample)
        report = masks_from_run(self.load_config, box, settings, output=self.output, in_place=self.in_place,
                                data=self.data)
        print(report.text(Path(f"the box {self.box}"), (0, 0)))
        return 0


@dataclass
class PointMasksCommand:
    """Object masks for every frame from a click on the object in one frame: SAM segments it there, the depth of a
    run trained on the capture carries the mask into every other frame, and SAM refines it in each. Writes the
    capture with object_mask_path entries for mald-nerf, as add-masks does. Needs SAM's weights (hf download
    facebook/sam-vit-base); without them use ns-diffusion masks (a box, no weights).
    """

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """config.yml of a run trained on the capture (a quick nerfacto is enough: 5-10k steps)."""
    view: Annotated[str, tyro.conf.arg(metavar="FRAME")]
    """The frame clicked in: its file name (frame_00012.png), stem (frame_00012) or index among the run's frames."""
    point: Annotated[List[str], tyro.conf.arg(metavar="X,Y")]
    """Clicks on the object, in pixels of that frame's image (x to the right, y down): --point 512,384 [530,400 ...]."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """Write a copy of the capture with the masks here (a new or empty folder)."""
    in_place: bool = False
    """Write into the capture itself; its transforms.json is saved as transforms.json.bak first."""
    data: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """The capture to write masks for; default: the one the run was trained on."""
    model: str = "facebook/sam-vit-base"
    """The segmentation model: a SAM Hugging Face id or a downloaded folder ("tiny": random weights, tests only)."""
    depth_tolerance: float = 0.05
    """A projected point counts in a frame when the frame's rendered depth there agrees within this fraction."""
    min_accumulation: float = 0.5
    """Only pixels at least this opaque are lifted to 3D or receive points."""
    prompt_points: int = 5
    """Positive points SAM gets in each other frame (with the projected region's bounding box)."""
    min_component: float = 0.05
    """Pieces of a frame's mask smaller than this fraction of the mask are dropped."""
    dilate: Tuple[int, int] = (5, 5)
    """Grow each mask by a square kernel of K pixels, N times: K N (SPIn-NeRF: 5 5); 0 0 = none."""

    def main(self) -> int:
        """Segment, carry the mask to every frame, write the capture and print the report."""
        from rich.console import Console

        from ns_diffusion_methods.data.point_masks import PointMaskSettings, masks_from_points

        if not self.load_config.is_file():
            raise UserFacingError(f"--load-config {self.load_config} does not exist; pass the config.yml of a run "
                                  f"trained on the capture (outputs/<capture>/nerfacto/<time>/config.yml).")
        points = []
        for text in self.point:
            try:
                x, y = (float(v) for v in text.split(","))
            except ValueError:
                raise UserFacingError(f"--point {text}: write a click as X,Y in pixels, e.g. --point 512,384."
                                      ) from None
            points.append((x, y))
        settings = PointMaskSettings(depth_tolerance=self.depth_tolerance, min_accumulation=self.min_accumulation,
                                     prompt_points=self.prompt_points, min_component=self.min_component,
                                     dilation=tuple(self.dilate))
        report = masks_from_points(self.load_config, self.view, points, settings, model_name=self.model,
                                   output=self.output, in_place=self.in_place, data=self.data,
                                   console=Console(stderr=True))
        print(report.text(Path(f"the click in {self.view}"), (0, 0)))
        return 0


@dataclass
class ViewerFlags:
    """Where the viewer serves (as ns-viewer's --viewer.websocket-host and --viewer.websocket-port)."""

    websocket_host: str = "0.0.0.0"
    """The host address the viewer listens on (0.0.0.0: every interface; 127.0.0.1: this machine only)."""
    websocket_port: Optional[int] = None
    """The port the viewer listens on; default: 7007, or the next free port."""


@dataclass
class MasksViewerCommand:
    """Open a trained run in nerfstudio's viewer (as ns-viewer does) with an "Object masks" panel: place the box of
    ns-diffusion masks around the object (numbers, or the gizmo drawn in the scene), then press "Write masks" to write
    the capture with the masks; the panel shows each view's coverage and the equivalent ns-diffusion masks command.
    Runs until stopped (Ctrl+C).
    """

    load_config: Annotated[Path, tyro.conf.arg(metavar="CONFIG")]
    """config.yml of a run trained on the capture (a quick nerfacto is enough: 5-10k steps)."""
    box: Annotated[Optional[str], tyro.conf.arg(metavar="CX,CY,CZ,SX,SY,SZ[,RX,RY,RZ]")] = None
    """The panel's first box (in the viewer's coordinates, as ns-diffusion masks --box); default: the unit box at the
    origin. Write --box=-0.5,... when the first number is negative."""
    output: Annotated[Optional[Path], tyro.conf.arg(metavar="DIR")] = None
    """The panel's output folder: a copy of the capture with the masks is written there (a new or empty folder); it
    can be typed in the panel too."""
    min_accumulation: float = 0.5
    """The panel's first Min accumulation (as ns-diffusion masks --min-accumulation)."""
    min_component: float = 0.05
    """The panel's first Min component (as ns-diffusion masks --min-component)."""
    dilate: Tuple[int, int] = (5, 5)
    """The panel's first dilation, K N (as ns-diffusion masks --dilate)."""
    floor_margin: float = 0.02
    """The panel's first Floor margin (as ns-diffusion masks --floor-margin)."""
    shadow_darkening: float = 0.2
    """The panel's first Shadow darkening (as ns-diffusion masks --shadow-darkening)."""
    supersample: int = 1
    """The panel's first Supersample (as ns-diffusion masks --supersample)."""
    viewer: ViewerFlags = field(default_factory=ViewerFlags)
    """Where the viewer serves."""

    def main(self) -> int:
        """Open the viewer with the panel; returns when the viewer is stopped."""
        from ns_diffusion_methods.data.box_masks import Box, BoxMaskSettings
        from ns_diffusion_methods.data.masks_viewer import open_viewer

        box = Box.parse(self.box) if self.box is not None else None
        if not self.load_config.is_file():
            raise UserFacingError(f"--load-config {self.load_config} does not exist; pass the config.yml of a run "
                                  f"trained on the capture (outputs/<capture>/nerfacto/<time>/config.yml).")
        settings = BoxMaskSettings(frame="run", min_accumulation=self.min_accumulation,
                                   min_component=self.min_component, dilation=tuple(self.dilate),
                                   floor_margin=self.floor_margin, shadow_darkening=self.shadow_darkening,
                                   supersample=self.supersample)
        # stopped with SIGTERM, exit as on Ctrl+C: nerfstudio's data workers of the loaded run end with the viewer
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        open_viewer(self.load_config, box, settings, self.output, self.viewer.websocket_host,
                    self.viewer.websocket_port)
        return 0
