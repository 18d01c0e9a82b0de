"""What ``ns-diffusion point-masks`` does: object masks of every frame from a click in one frame, with a segmentation
model (SAM through ``transformers``) and the depth of a trained run (the command: :class:`.commands.PointMasksCommand`).

1. **The click.** In one frame (``--view``), the clicked pixels (``--point X,Y``, in that image's pixels) prompt SAM;
   of its three candidate masks the one it scores highest is that frame's mask.
2. **Lift.** The run renders every frame's depth (and accumulation); the seed mask's opaque pixels become 3D points
   on the object's surface (``origin + direction * depth``, as :mod:`.box_masks` computes them).
3. **Project.** The points are projected into every other frame (pinhole, :func:`~ns_diffusion_methods.geometry
   .visibility.project_points`). A point counts where it lands inside the image, on an opaque pixel whose rendered
   depth agrees with the point's distance (``depth_tolerance``, relative): the rest is hidden behind something in
   that frame. The pixels hit are the frame's *support*; a frame with fewer than ``min_support`` of them does not
   show the object and gets an empty mask.
4. **Refine per frame.** SAM is prompted in that frame with up to ``prompt_points`` pixels spread over the support's
   interior (farthest-point order, starting next to its centroid) and the support's bounding box; of its candidates
   the one that overlaps the (closed) support best is kept, so the segmenter sharpens the projection but cannot wander
   off to another object.
5. **Clean up and write**, as the box path does: holes filled, small pieces dropped, dilated, and written into a copy
   of the capture (or in place, with a backup) by ``add-masks``.

The segmentation weights are a Hugging Face id or a folder (``--model``, default :data:`DEFAULT_MODEL`); offline and
not cached they are refused with the command that fetches them. ``tiny`` builds a random-weight SAM of a few
thousand parameters for tests: its masks are meaningless, and it says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ns_diffusion_methods.data.masks import Dilation
from ns_diffusion_methods.errors import DataError, ModelUnavailableError, UserFacingError

#: SAM ViT-B, the smallest of the original SAM checkpoints (375 MB)
DEFAULT_MODEL = "facebook/sam-vit-base"

#: a segmenter: (image [H, W, 3] uint8, positive points [(x, y)], optional box (x0, y0, x1, y1), optional reference
#: mask [H, W] bool to choose among candidates) -> mask [H, W] bool
Segment = Callable[[np.ndarray, Sequence[Tuple[float, float]], Optional[Tuple[float, float, float, float]],
                    Optional[np.ndarray]], np.ndarray]


@dataclass
class PointMaskSettings:
    """How the click becomes masks of every frame (see the module docstring)."""

    depth_tolerance: float = 0.05
    """A projected point counts in a frame when the frame's rendered depth there is within this fraction of the
    point's distance (otherwise something hides it there)."""
    min_accumulation: float = 0.5
    """Only pixels at least this opaque are lifted to 3D or receive points (sky and holes are not surfaces)."""
    min_support: int = 4
    """A frame shows the object when at least this many of its pixels receive a visible projected point."""
    prompt_points: int = 5
    """Positive points SAM gets in each frame the object is projected into (with the support's bounding box)."""
    min_component: float = 0.05
    """Pieces of a frame's mask smaller than this fraction of the mask are dropped."""
    dilation: Dilation = field(default_factory=lambda: (5, 5))
    """Grow each mask by a square kernel of K pixels, N times (SPIn-NeRF: 5 5); (0, 0) = none."""


# ---------------------------------------------------------------------------------------------------- segmenter
def tiny_sam(seed: int = 0) -> Tuple[Any, Any]:
    """A random-weight SAM (64 px input) and its processor: for tests of the plumbing only."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=16,
                           output_channels=32, mlp_dim=64, window_size=2, global_attn_indexes=[1], num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64,
                                 iou_head_hidden_dim=32))
    torch.manual_seed(seed)
    processor = SamProcessor(image_processor=SamImageProcessor(size={"longest_edge": 64},
                                                               pad_size={"height": 64, "width": 64}))
    return SamModel(config).eval(), processor


def load_segmenter(model: str = DEFAULT_MODEL, device: str = "cpu", console: Any = None) -> Segment:
    """SAM from a Hugging Face id or a folder (``tiny``: random weights, tests only) as a :data:`Segment`."""
    if model == "tiny":
        sam, processor = tiny_sam()
        if console is not None:
            console.print("[yellow]--model tiny: a random-weight SAM; its masks are meaningless (tests only).[/yellow]")
    else:
        from transformers import SamModel, SamProcessor

        try:
            processor = SamProcessor.from_pretrained(model)
            sam = SamModel.from_pretrained(model).eval()
        except (OSError, ValueError) as err:
            raise ModelUnavailableError(
                f"The segmentation model {model} could not be loaded ({type(err).__name__}: {err}). It is neither "
                f"cached nor reachable: on a machine with internet run `hf download {DEFAULT_MODEL}` and pass "
                f"--model {DEFAULT_MODEL} (or the downloaded folder), or place masks with a box instead "
                f"(ns-diffusion masks, ns-diffusion masks-viewer).") from err
    sam = sam.to(device)

    @torch.no_grad()
    def segment(image: np.ndarray, points: Sequence[Tuple[float, float]],
                box: Optional[Tuple[float, float, float, float]] = None,
                reference: Optional[np.ndarray] = None) -> np.ndarray:
        kwargs = {"input_points": [[[list(map(float, p)) for p in points]]],
                  "input_labels": [[[1] * len(points)]]}
        if box is not None:
            kwargs["input_boxes"] = [[list(map(float, box))]]
        inputs = processor(images=image, return_tensors="pt", **kwargs)
        outputs = sam(**{k: v.to(device) for k, v in inputs.items() if k not in ("original_sizes",
                                                                               "reshaped_input_sizes")},
                      multimask_output=True)
        masks = processor.image_processor.post_process_masks(outputs.pred_masks.cpu(), inputs["original_sizes"],
                                                             inputs["reshaped_input_sizes"])[0][0].numpy()
        if reference is not None and reference.any():
            overlap = [(m & reference).sum() / max((m | reference).sum(), 1) for m in masks]
            return masks[int(np.argmax(overlap))].astype(bool)
        return masks[int(outputs.iou_scores[0, 0].argmax())].astype(bool)

    return segment


# ---------------------------------------------------------------------------------------------------- geometry
@dataclass
class RenderedView:
    """A frame's rendered distance along each (unit) ray ``[H, W]`` and opacity ``[H, W]`` bool."""

    distance: Tensor
    opaque: Tensor


def render_view(model: Any, camera: Any, settings: PointMaskSettings) -> RenderedView:
    """Render one camera's depth (as the distance along its unit rays) and opacity."""
    from ns_diffusion_methods.data.box_masks import render_distance

    render = render_distance(model, camera, "ns-diffusion point-masks")
    distance, accumulation = render.distance, render.accumulation
    distance = distance[..., 0].float().cpu()
    opaque = (accumulation.cpu() >= settings.min_accumulation if accumulation is not None
              else torch.ones_like(distance, dtype=torch.bool))
    return RenderedView(distance, opaque)


def lift(camera: Any, rendered: RenderedView, mask: np.ndarray) -> Tensor:
    """``[M, 3]`` surface points of the opaque pixels of ``mask`` (the camera's world coordinates)."""
    from ns_diffusion_methods.geometry.visibility import surface_points_of

    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    pick = torch.from_numpy(np.asarray(mask, dtype=bool)) & rendered.opaque
    return surface_points_of(rays.origins.cpu().float(), rays.directions.cpu().float(), rendered.distance, pick)


def support(points: Tensor, camera: Any, rendered: RenderedView, tolerance: float) -> np.ndarray:
    """``[H, W]`` bool: the pixels of ``camera`` that receive a point it sees (in the image, on an opaque pixel at the
    depth it renders there)."""
    from ns_diffusion_methods.geometry.visibility import project_points

    height, width = rendered.distance.shape
    fx, fy, cx, cy = (float(v) for v in (camera.fx[0, 0], camera.fy[0, 0], camera.cx[0, 0], camera.cy[0, 0]))
    row, col, distance, inside = project_points(points, camera.camera_to_worlds[0].cpu().float(), fx, fy, cx, cy,
                                                width, height)
    row, col, distance = row[inside], col[inside], distance[inside]
    seen = rendered.opaque[row, col] & ((rendered.distance[row, col] - distance).abs() <= tolerance * distance)
    hit = np.zeros((height, width), dtype=bool)
    hit[row[seen].numpy(), col[seen].numpy()] = True
    return hit


def close_support(hit: np.ndarray) -> np.ndarray:
    """The support as a region: closed by a 3x3 square and with its holes filled (projected points leave gaps)."""
    from scipy import ndimage

    closed = ndimage.binary_closing(hit, structure=np.ones((3, 3), dtype=bool), border_value=0) | hit
    return ndimage.binary_fill_holes(closed)


def interior(region: np.ndarray) -> np.ndarray:
    """The region without its outer ring of pixels (points on a silhouette are ambiguous, and a projected point on
    the silhouette may land a pixel off the object); the region itself when nothing is left."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(region, structure=np.ones((3, 3), dtype=bool), border_value=0)
    return inner if inner.any() else region


def spread_points(hit: np.ndarray, count: int) -> List[Tuple[float, float]]:
    """Up to ``count`` pixel centres ``(x, y)`` of ``hit``: the one nearest its centroid, then farthest-point order."""
    rows, cols = np.nonzero(hit)
    pixels = np.stack([cols + 0.5, rows + 0.5], axis=1)
    chosen = [int(np.argmin(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1)))]
    nearest = ((pixels - pixels[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < min(count, len(pixels)):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((pixels - pixels[chosen[-1]]) ** 2).sum(axis=1))
    return [tuple(map(float, pixels[i])) for i in chosen]


# ---------------------------------------------------------------------------------------------------- the masks
def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 (alpha dropped)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def find_view(views: Sequence[Tuple[Path, Any]], view: str) -> int:
    """The index of the frame named ``view`` (file name, stem or index among the run's frames)."""
    for index, (path, _) in enumerate(views):
        if view in (path.name, path.stem, str(path)):
            return index
    if view.isdigit() and int(view) < len(views):
        return int(view)
    names = ", ".join(path.name for path, _ in views[:5])
    raise UserFacingError(f"--view {view} is none of the run's {len(views)} frames ({names}, ...): give a frame's "
                          f"file name, its stem or its index (0-{len(views) - 1}).")


def derive_point_masks(model: Any, views: Sequence[Tuple[Path, Any]], seed: int,
                       points: Sequence[Tuple[float, float]], segment: Segment, settings: PointMaskSettings,
                       progress: Optional[Callable[[], None]] = None) -> Any:
    """Masks of every frame of ``views`` from the clicked ``points`` (pixels of frame ``seed``); see the module
    docstring. Returns :class:`~ns_diffusion_methods.data.box_masks.DerivedMasks` at render resolution."""
    from ns_diffusion_methods.data.box_masks import DerivedMasks, clean_mask

    device = next(model.parameters()).device
    cameras = [camera.to(device) for _, camera in views]
    rendered = []
    for camera in cameras:
        rendered.append(render_view(model, camera, settings))
        if progress is not None:
            progress()
    seed_path = Path(views[seed][0])
    height, width = rendered[seed].distance.shape
    outside = [(x, y) for x, y in points if not (0 <= x < width and 0 <= y < height)]
    if outside:
        raise UserFacingError(f"--point {outside} lies outside {seed_path.name} ({width}x{height} px, x from 0 to "
                              f"{width - 1}, y from 0 to {height - 1}).")
    seed_mask = segment(read_rgb(seed_path), points, None, None)
    surface = lift(cameras[seed], rendered[seed], seed_mask)
    if surface.shape[0] == 0:
        raise DataError(f"The segmenter found no opaque object pixel at {list(points)} in {seed_path.name}, so no "
                        f"mask was written. Click on the object itself (x, y in that image's pixels).")
    derived = DerivedMasks()
    for index, ((path, _), camera, view) in enumerate(zip(views, cameras, rendered)):
        if index == seed:
            mask = seed_mask
        else:
            hit = support(surface, camera, view, settings.depth_tolerance)
            if hit.sum() < settings.min_support:
                mask = np.zeros_like(hit)
            else:
                region = close_support(hit)
                rows, cols = np.nonzero(region)
                box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
                mask = segment(read_rgb(Path(path)), spread_points(interior(region), settings.prompt_points), box,
                               region)
        derived.files.append(Path(path))
        derived.masks.append(clean_mask(np.asarray(mask, dtype=bool), settings.min_component, settings.dilation))
    return derived


def masks_from_points(load_config: Path, view: str, points: Sequence[Tuple[float, float]],
                      settings: PointMaskSettings, model_name: str = DEFAULT_MODEL, output: Optional[Path] = None,
                      in_place: bool = False, data: Optional[Path] = None, console: Any = None) -> Any:
    """The command's work: load the segmenter (first, so a missing model stops before any render) and the run,
    derive every frame's mask, write the capture. Returns add-masks' report."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.data.add_masks import add_masks
    from ns_diffusion_methods.data.box_masks import run_capture, run_views, write_masks
    from ns_diffusion_methods.engine.progress import progress_bars

    device = "cuda" if torch.cuda.is_available() else "cpu"
    segment = load_segmenter(model_name, device, console)
    config, pipeline, _, _ = eval_setup(Path(load_config), test_mode="inference")
    capture = Path(data) if data is not None else run_capture(config)
    views = run_views(config)
    seed = find_view(views, view)
    with progress_bars() as progress:
        task = progress.add_task("Rendering the depth of every frame", total=len(views))
        derived = derive_point_masks(pipeline.model, views, seed, points, segment, settings,
                                     lambda: progress.advance(task))
    with tempfile.TemporaryDirectory(prefix="ns-diffusion-point-masks-") as folder:
        write_masks(derived, Path(folder))
        return add_masks(capture, Path(folder), output=output, in_place=in_place)
