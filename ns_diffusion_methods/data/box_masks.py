"""What ``ns-diffusion masks`` does: object masks of every frame from a 3D box around the object, with the depth
of a trained run, instead of painting a mask per view (the command: :class:`.commands.MasksCommand`).

The path from a phone video to ``mald-nerf`` without painting: ``ns-process-data`` writes the capture; a quick
``ns-train nerfacto`` (or splatfacto) learns its geometry; in the viewer, "Crop Viewport" shows a box (its centre,
scale and rotation are the viewer's "Crop center", "Crop scale" and "Crop rotation"); place it around the object and
pass the same numbers to this command. ``ns-diffusion masks-viewer`` does both in the viewer: its panel places the box
and writes the masks through :func:`masks_from_views`, as the command does (:mod:`.masks_viewer`).

For every frame of the run (training and evaluation split alike: all of them were photographed with the object):

1. the run renders depth and accumulation (and colour, for the shadow) at the frame's camera;
2. each pixel's surface point is ``origin + direction * t``: nerfstudio's NeRF models report the distance along the
   (unit) ray direction; splat models report the depth along the camera axis, converted with the ray's
   ``directions_norm``;
3. a pixel is object when its point lies inside the oriented box and the pixel is opaque (accumulation at least
   ``min_accumulation``); with ``supersample`` S > 1 the frame is rendered with S x S rays per pixel and a pixel is
   object when at least half of its rays are;
4. the floor: the box of an object standing on the floor stops at the floor, but a quick run's floor is never exactly
   flat, so floor around the object's base, inside the box's footprint, lands above the box's bottom wherever the run
   lifted it a little. The dominant plane near the box's bottom face is fitted to the surface points of all frames
   (:func:`fit_floor`), and points closer to it than ``floor_margin`` of the box's height are not object;
5. the shadow (``shadow_darkening``): the object's shadow changes the floor's colour, so it must go with the object.
   Floor points of every frame around the box are binned on a grid on the floor; cells whose median colour over all
   frames is clearly darker than the floor around, and which touch the box's footprint, are the shadow
   (:func:`find_shadow`), and the pixels whose floor point falls in them join the mask;
6. clean-up, in the frame's render resolution: holes inside the object are filled, connected pieces smaller than
   ``min_component`` of the mask are dropped (stray floaters inside the box), then the mask is dilated (SPIn-NeRF
   dilates its masks 5x5, five times);
7. the mask is enlarged (nearest) to the frame's image size and handed to :func:`~ns_diffusion_methods.data.add_masks
   .add_masks`, which writes the capture copy (or the capture in place, with a backup) with ``object_mask_path``
   entries, exactly as ``ns-diffusion add-masks`` does with painted masks.

The box is given in the run's coordinates (those the viewer shows: the capture's poses after the dataparser's
orientation and scale, ``dataparser_transforms.json``), or in the capture's own coordinates (``frame="capture"``).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ns_diffusion_methods.data.masks import Dilation, dilate_mask, resize_mask
from ns_diffusion_methods.errors import DataError, UserFacingError

BoxFrame = Literal["run", "capture"]

#: a mask covering more than this fraction of a view in every view means the box holds the whole scene
MOST_OF_THE_VIEW = 0.9


@dataclass
class Box:
    """An oriented box: centre, full side lengths and rotation (roll, pitch, yaw in radians; the viewer's order)."""

    center: Tuple[float, float, float]
    size: Tuple[float, float, float]
    rotation: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def parse(text: str) -> "Box":
        """``"CX,CY,CZ,SX,SY,SZ[,RX,RY,RZ]"`` (commas or spaces) as a :class:`Box`."""
        parts = [p for p in text.replace(",", " ").split() if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise UserFacingError(f"--box takes numbers, CX,CY,CZ,SX,SY,SZ[,RX,RY,RZ], but got {text!r}.") from None
        if len(values) not in (6, 9) or not all(math.isfinite(v) for v in values):
            raise UserFacingError(f"--box takes 6 or 9 finite numbers, CX,CY,CZ,SX,SY,SZ[,RX,RY,RZ] (centre, side "
                                  f"lengths, rotation in radians as the viewer's Crop rotation), but got {text!r}.")
        if min(values[3:6]) <= 0:
            raise UserFacingError(f"The box's side lengths SX,SY,SZ must be positive, but got {values[3:6]}.")
        rotation = tuple(values[6:9]) if len(values) == 9 else (0.0, 0.0, 0.0)
        return Box(tuple(values[:3]), tuple(values[3:6]), rotation)  # type: ignore[arg-type]

    def rotation_matrix(self) -> Tensor:
        """``R = Rz(yaw) Ry(pitch) Rx(roll)`` [3, 3], the convention of the viewer's crop box (viser's ``from_rpy``)."""
        roll, pitch, yaw = self.rotation
        cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
                                  math.sin(yaw))
        rx = torch.tensor([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]], dtype=torch.float64)
        ry = torch.tensor([[cp, 0, sp], [0, 1.0, 0], [-sp, 0, cp]], dtype=torch.float64)
        rz = torch.tensor([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]], dtype=torch.float64)
        return rz @ ry @ rx

    def to_run(self, transform: Tensor, scale: float) -> "Box":
        """The same box in a run's coordinates (``p -> scale * (A p + b)``, :func:`run_to_capture`'s inverse), as the
        viewer shows it: centre and sides moved and scaled, rotation ``A R``."""
        transform = transform.double()
        centre = scale * (transform[:3, :3] @ torch.tensor(self.center, dtype=torch.float64) + transform[:3, 3])
        rotation = transform[:3, :3] @ self.rotation_matrix()
        roll = math.atan2(float(rotation[2, 1]), float(rotation[2, 2]))
        pitch = -math.asin(max(-1.0, min(1.0, float(rotation[2, 0]))))
        yaw = math.atan2(float(rotation[1, 0]), float(rotation[0, 0]))
        return Box(tuple(centre.tolist()), tuple(s * scale for s in self.size), (roll, pitch, yaw))  # type: ignore

    def to_local(self, points: Tensor) -> Tensor:
        """Points ``[..., 3]`` in the box's own frame: its centre at the origin, its sides along the axes (``z`` from
        its bottom face to its top face)."""
        rotation = self.rotation_matrix().to(points)
        return (points - torch.tensor(self.center).to(points)) @ rotation  # R^T (p - c), row vectors

    def contains(self, points: Tensor) -> Tensor:
        """Boolean ``[...]``: whether each point ``[..., 3]`` lies inside the box."""
        return self.contains_local(self.to_local(points))

    def contains_local(self, local: Tensor) -> Tensor:
        """Boolean ``[...]``: whether each point ``[..., 3]`` of the box's own frame (:meth:`to_local`) is inside."""
        half = torch.tensor(self.size).to(local) / 2
        return (local.abs() <= half).all(dim=-1)


def run_to_capture(points: Tensor, transform: Tensor, scale: float) -> Tensor:
    """Points ``[..., 3]`` of a run's coordinates in the capture's own coordinates.

    nerfstudio maps a capture point ``p`` to ``scale * (A p + b)`` (``dataparser_transforms.json``: ``transform`` =
    ``[A | b]`` with ``A`` a rotation, and ``scale``); this is the inverse, ``A^T (q / scale - b)``.
    """
    rotation, translation = transform[:3, :3].to(points), transform[:3, 3].to(points)
    return (points / scale - translation) @ rotation


def ray_distance(depth: Tensor, directions_norm: Optional[Tensor], depth_along_axis: bool) -> Tensor:
    """A rendered ``depth`` ``[..., 1]`` as the distance along the unit ray: NeRFs report that already; splats report
    the depth along the camera axis, converted with ``directions_norm`` (the length of the ray direction whose axis
    component is 1)."""
    return depth * directions_norm if depth_along_axis and directions_norm is not None else depth


def surface_points(origins: Tensor, directions: Tensor, depth: Tensor, directions_norm: Optional[Tensor],
                   depth_along_axis: bool) -> Tensor:
    """``[..., 3]`` surface points of rays with unit ``directions`` and a rendered ``depth`` ``[..., 1]``
    (:func:`ray_distance`)."""
    return origins + directions * ray_distance(depth, directions_norm, depth_along_axis)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_fill_holes(mask)


def clean_mask(mask: np.ndarray, min_component: float, dilation: Dilation) -> np.ndarray:
    """Fill holes, drop connected pieces smaller than ``min_component`` of the mask's pixels, then dilate."""
    from scipy import ndimage

    if not mask.any():
        return mask
    mask = _fill_holes(mask)
    labels, count = ndimage.label(mask)
    if count > 1 and min_component > 0:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_component * sizes.sum()) + 1
        mask = np.isin(labels, keep)
    return dilate_mask(mask, dilation)


@dataclass
class BoxMaskSettings:
    """How masks are derived from the box (the command's flags)."""

    frame: BoxFrame = "run"
    """Coordinates of the box: run = the run's (what the viewer shows), capture = those of the capture's
    transforms.json (before nerfstudio orients and scales the poses)."""
    min_accumulation: float = 0.5
    """A pixel can be object only where the run is at least this opaque (background sky and holes are not)."""
    min_component: float = 0.05
    """Pieces of a view's mask smaller than this fraction of the mask are dropped (floaters inside the box)."""
    dilation: Dilation = (5, 5)
    """Grow each mask by a square kernel of K pixels, N times, at the run's render size: K N (SPIn-NeRF: 5 5);
    0 0 = none."""
    floor_margin: float = 0.02
    """Surface closer than this fraction of the box's height to the floor under the box is not object; 0 = off. The
    floor is the dominant plane near the box's bottom face (its -z side: the bottom in the viewer), fitted to the
    surface points of all views around and under the box; without it, floor inside the box's footprint becomes object
    wherever the run reconstructed it above the box's bottom. Where no plane stands out there (an object hanging or
    standing on something small), nothing is removed. The object loses its lowest sliver, this high (objects flatter
    than it vanish: lower it for those)."""
    shadow_darkening: float = 0.2
    """The object's shadow joins its mask: floor (within 2 box footprints of the box's centre) whose colour, the
    median over every view that sees it, is at least this fraction darker than the floor around the object, and
    which touches the object's footprint on the floor. Needs the floor (floor_margin > 0, and a floor found); 0 = the
    object alone. A shadow left in the training images stays in the scene once the object is gone; dark floor
    texture next to the object is masked (and inpainted) too."""
    supersample: int = 1
    """Render each view with S x S rays per pixel; a pixel is object when at least half of its rays end in the box:
    keeps parts thinner than a pixel that no pixel centre sees. Costs S^2 the rendering time, and on a quick run's
    blurred silhouettes the extra rays also land on the floor just around the object, so 1 is the default."""

    def __post_init__(self) -> None:
        if not 0 <= self.floor_margin < 0.5:
            raise UserFacingError(f"--floor-margin is a fraction of the box's height in [0, 0.5) (0 = keep the floor), "
                                  f"but got {self.floor_margin}.")
        if not 0 <= self.shadow_darkening < 1:
            raise UserFacingError(f"--shadow-darkening is a fraction in [0, 1) (0 = no shadow), but got "
                                  f"{self.shadow_darkening}.")
        if int(self.supersample) != self.supersample or self.supersample < 1:
            raise UserFacingError(f"--supersample is a whole number of rays per pixel side (1 = one ray per pixel), "
                                  f"but got {self.supersample}.")


#: the floor is searched within this fraction of the box's height of its bottom face
FLOOR_BAND = 0.25
#: ... and within the box's footprint enlarged this many times about its centre (floor around the object, too)
FLOOR_SKIRT = 2.0
#: a plane is the floor only when at least this fraction of the surface points searched lie on it
FLOOR_MIN_SUPPORT = 0.25
#: ... and it is at most this many degrees from parallel to the box's bottom face
FLOOR_MAX_TILT_DEG = 20.0
#: surface points of each view kept for the floor fit (a strided subset of those searched)
FLOOR_POINTS_PER_VIEW = 4096
#: random plane hypotheses tried by :func:`fit_floor` (seeded: the same points give the same floor)
FLOOR_TRIALS = 256


@dataclass
class FloorPlane:
    """A plane in a box's own frame (:meth:`Box.to_local`): ``z = slope[0] x + slope[1] y + offset``."""

    slope: Tuple[float, float]
    offset: float
    support: float
    """The fraction of the searched surface points that lie on it."""

    def height_above(self, local: np.ndarray) -> np.ndarray:
        """Signed distance ``[...]`` of box-frame points ``[..., 3]`` above the plane (negative below)."""
        a, b = self.slope
        return (local[..., 2] - a * local[..., 0] - b * local[..., 1] - self.offset) / math.sqrt(1 + a * a + b * b)


def floor_search_region(local: np.ndarray, size: Sequence[float]) -> np.ndarray:
    """Boolean ``[...]``: box-frame points ``[..., 3]`` where :func:`fit_floor` looks for the floor: within
    :data:`FLOOR_BAND` of the box's height of its bottom face, inside its footprint enlarged :data:`FLOOR_SKIRT`
    times."""
    half_x, half_y, height = size[0] / 2, size[1] / 2, size[2]
    return ((np.abs(local[..., 0]) <= FLOOR_SKIRT * half_x) & (np.abs(local[..., 1]) <= FLOOR_SKIRT * half_y)
            & (np.abs(local[..., 2] + height / 2) <= FLOOR_BAND * height))


def fit_floor(local: np.ndarray, size: Sequence[float], tolerance: float) -> Optional[FloorPlane]:
    """The dominant plane, nearly parallel to the bottom face, among box-frame surface points ``[N, 3]`` (those of
    :func:`floor_search_region`), or None when no plane holds :data:`FLOOR_MIN_SUPPORT` of them.

    RANSAC: planes through three random points, tilted at most :data:`FLOOR_MAX_TILT_DEG` from the bottom face, are
    scored by their points within ``tolerance`` (box units); the best is refined by least squares on its points.
    """
    local = np.asarray(local, dtype=np.float64).reshape(-1, 3)
    local = local[floor_search_region(local, size)]
    if len(local) < 30 or tolerance <= 0:
        return None
    generator = np.random.default_rng(0)
    min_cos = math.cos(math.radians(FLOOR_MAX_TILT_DEG))
    best, best_count = None, 0
    picks = generator.integers(0, len(local), size=(FLOOR_TRIALS, 3))
    for i, j, k in picks:
        normal = np.cross(local[j] - local[i], local[k] - local[i])
        length = np.linalg.norm(normal)
        if length < 1e-12 or abs(normal[2]) < min_cos * length:
            continue
        normal = normal / length
        inliers = np.abs((local - local[i]) @ normal) <= tolerance
        count = int(inliers.sum())
        if count > best_count:
            best, best_count = inliers, count
    if best is None:
        return None
    for _ in range(3):  # least squares z = a x + b y + c on the plane's points, then its points again
        design = np.column_stack([local[best, 0], local[best, 1], np.ones(int(best.sum()))])
        (a, b, c), *_ = np.linalg.lstsq(design, local[best, 2], rcond=None)
        plane = FloorPlane((float(a), float(b)), float(c), 0.0)
        residual = plane.height_above(local)
        # the plane's points: within the floor's own spread (robust: 3 median absolute deviations), so that the
        # object's lowest points, within ``tolerance`` of the floor, do not tilt or lift it
        spread = 1.4826 * float(np.median(np.abs(residual[best] - np.median(residual[best]))))
        refined = np.abs(residual) <= min(tolerance, max(3 * spread, 0.01 * tolerance))
        if refined.sum() < 3:
            return None
        best = refined
    support = float((np.abs(residual) <= tolerance).mean())
    tilt = math.degrees(math.atan(math.hypot(a, b)))
    if support < FLOOR_MIN_SUPPORT or tilt > FLOOR_MAX_TILT_DEG:
        return None
    return FloorPlane((float(a), float(b)), float(c), support)


#: floor points within this fraction of the box's height of the floor plane are floor for the shadow search
SHADOW_FLOOR_TOLERANCE = 0.05
#: the shadow search's grid on the floor has this many cells across the box's footprint (per side)
SHADOW_CELLS_PER_BOX = 8
#: a cell's colour is the median of at least this many floor points (of any views); emptier cells are unknown
SHADOW_MIN_POINTS = 3


@dataclass
class ShadowMap:
    """Which cells of a grid on the floor, in the box's frame, are the object's shadow (:func:`find_shadow`). The
    grid spans :data:`FLOOR_SKIRT` times the box's footprint about its centre."""

    shadow: np.ndarray
    """``[C, C]`` bool, indexed by (x, y) cell."""
    half: Tuple[float, float]
    """Half-extent of the grid along the box's x and y."""

    def cells(self, local: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cell indices (x, y) of box-frame points ``[N, 3]`` and whether each lies on the grid."""
        count = self.shadow.shape[0]
        u = (local[:, 0] / self.half[0] + 1) / 2 * count
        v = (local[:, 1] / self.half[1] + 1) / 2 * count
        on = (u >= 0) & (u < count) & (v >= 0) & (v < count)
        return np.clip(u.astype(int), 0, count - 1), np.clip(v.astype(int), 0, count - 1), on

    def contains(self, local: np.ndarray) -> np.ndarray:
        """``[N]`` bool: box-frame floor points ``[N, 3]`` in the shadow."""
        i, j, on = self.cells(local)
        return on & self.shadow[i, j]


def find_shadow(local: np.ndarray, luminance: np.ndarray, size: Sequence[float], floor: FloorPlane,
                darkening: float) -> ShadowMap:
    """The object's shadow on the floor, from the floor points ``[N, 3]`` (box frame) of every view and their rendered
    ``luminance`` ``[N]``.

    The floor within :data:`FLOOR_SKIRT` times the box's footprint is cut into a grid (:data:`SHADOW_CELLS_PER_BOX`
    cells across the footprint); each cell's colour is the median luminance of the floor points of all views in it
    (a shadow is where the floor is, whichever view looks, so one view's glare does not decide). The floor's own
    colour is the median of the cells outside the footprint; cells at least ``darkening`` darker are shadow when
    they connect to the footprint (through other shadow cells): the shadow the object casts, not dark floor further
    away.
    """
    from scipy import ndimage

    local = np.asarray(local, dtype=np.float64).reshape(-1, 3)
    luminance = np.asarray(luminance, dtype=np.float64).reshape(-1)
    half = (FLOOR_SKIRT * size[0] / 2, FLOOR_SKIRT * size[1] / 2)
    count = int(round(2 * FLOOR_SKIRT * SHADOW_CELLS_PER_BOX))
    grid = ShadowMap(np.zeros((count, count), dtype=bool), half)
    on_floor = np.abs(floor.height_above(local)) <= SHADOW_FLOOR_TOLERANCE * size[2]
    i, j, on = grid.cells(local)
    keep = on & on_floor
    if not keep.any():
        return grid
    cell = (i * count + j)[keep]
    order = np.lexsort((luminance[keep], cell))  # by cell, then by luminance within each cell
    cell, values = cell[order], luminance[keep][order]
    counts = np.bincount(cell, minlength=count * count)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    median = np.full(count * count, np.nan)
    known = counts >= SHADOW_MIN_POINTS
    median[known] = values[starts[known] + counts[known] // 2]
    median = median.reshape(count, count)
    centres = (np.arange(count) + 0.5) / count * 2 - 1  # cell centres in units of the grid's half-extent
    footprint = (np.abs(centres)[:, None] * FLOOR_SKIRT <= 1) & (np.abs(centres)[None, :] * FLOOR_SKIRT <= 1)
    around = median[~footprint]
    if not np.isfinite(around).any():
        return grid
    reference = float(np.nanmedian(around))
    dark = np.nan_to_num(median, nan=np.inf) < (1 - darkening) * reference
    labels, _ = ndimage.label(dark | footprint)
    touching = np.unique(labels[footprint])
    grid.shadow = np.isin(labels, touching[touching > 0]) & dark
    return grid


def reduce_supersampled(mask: np.ndarray, factor: int) -> np.ndarray:
    """``[H, W]`` from an ``[H * factor, W * factor]`` mask of sub-pixel rays: True where at least half are."""
    if factor == 1:
        return mask
    height, width = mask.shape[0] // factor, mask.shape[1] // factor
    blocks = mask[:height * factor, :width * factor].reshape(height, factor, width, factor)
    return blocks.sum(axis=(1, 3)) * 2 >= factor * factor


@dataclass
class DerivedMasks:
    """Masks of a run's frames, at render resolution, with their image files."""

    files: List[Path] = field(default_factory=list)
    masks: List[np.ndarray] = field(default_factory=list)
    floor: Optional[FloorPlane] = None
    """The floor found under the box (box frame), when ``floor_margin`` is on and one was found."""
    shadow: Optional[ShadowMap] = None
    """The object's shadow on that floor, when ``shadow_darkening`` is on and a floor was found."""

    def coverage(self) -> List[float]:
        return [float(m.mean()) for m in self.masks]


def _is_splat(model: Any) -> bool:
    try:
        from nerfstudio.models.splatfacto import SplatfactoModel
    except ImportError:  # pragma: no cover - nerfstudio without gsplat
        return False
    return isinstance(model, SplatfactoModel)


class DepthRender(NamedTuple):
    """One camera rendered by :func:`render_distance`."""

    rays: Any
    """The camera's rays (unit directions)."""
    distance: Tensor
    """``[H, W, 1]`` distance along each ray to the surface."""
    accumulation: Optional[Tensor]
    """``[H, W]`` accumulation (None when the model renders none)."""
    rgb: Optional[Tensor]
    """``[H, W, 3]`` colour, when asked for."""


def render_distance(model: Any, camera: Any, purpose: str = "ns-diffusion masks", rgb: bool = False) -> DepthRender:
    """Render one camera: its rays, the distance along each ray to the surface (splat models' depth along the camera
    axis converted, :func:`ray_distance`), the accumulation and (``rgb``) the colour. Shared by the box (``masks``)
    and the click (``point-masks``) paths."""
    from ns_diffusion_methods.dataset_updates.render import render_camera_outputs

    names = ("depth", "accumulation", "rgb") if rgb else ("depth", "accumulation")
    outputs = render_camera_outputs(model, camera, names)
    if "depth" not in outputs:
        raise UserFacingError(f"The run's model ({type(model).__name__}) renders no depth, which {purpose} needs. "
                              f"Train a nerfacto or splatfacto run on the capture and pass its config.yml.")
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    norm = None if rays.metadata is None else rays.metadata.get("directions_norm")
    distance = ray_distance(outputs["depth"].to(rays.origins), norm, _is_splat(model))
    accumulation = outputs["accumulation"][..., 0] if "accumulation" in outputs else None
    return DepthRender(rays, distance, accumulation, outputs.get("rgb"))


@dataclass
class _ViewCandidates:
    """What :func:`derive_masks` keeps of one rendered view until the floor (and the shadow) are known."""

    inside: np.ndarray
    """``[H*S, W*S]`` bool: opaque rays ending in the box."""
    inside_points: np.ndarray
    """``[K, 3]`` box-frame points of those rays."""
    near: Optional[np.ndarray] = None
    """``[H*S, W*S]`` bool: opaque rays ending where the floor is searched (:func:`floor_search_region`)."""
    near_points: Optional[np.ndarray] = None
    """``[M, 3]`` their box-frame points."""
    near_luminance: Optional[np.ndarray] = None
    """``[M]`` their rendered luminance (for the shadow)."""


def derive_masks(model: Any, views: Sequence[Tuple[Path, Any]], box: Box, settings: BoxMaskSettings,
                 to_capture: Optional[Callable[[Tensor], Tensor]] = None,
                 progress: Optional[Callable[[], None]] = None) -> DerivedMasks:
    """Render every ``(image file, single camera)`` of ``views`` and mark the pixels whose surface is in ``box``.

    Every view is rendered once; what the floor fit needs (a strided subset of the points near the box's bottom) and
    each view's candidate pixels (inside the box and opaque, with their height) are kept until all views are rendered
    and the floor is known.

    Args:
        model: a nerfstudio model with ``get_outputs_for_camera`` giving ``depth`` and ``accumulation``.
        to_capture: maps run coordinates to the box's (``frame="capture"``); None = the box is in run coordinates.
    """
    import copy

    device = next(model.parameters()).device
    factor = int(settings.supersample)
    use_floor = settings.floor_margin > 0
    use_shadow = use_floor and settings.shadow_darkening > 0
    views_kept: List[_ViewCandidates] = []
    floor_samples: List[np.ndarray] = []
    for _, camera in views:
        camera = camera.to(device)
        if factor > 1:
            camera = copy.deepcopy(camera)
            camera.rescale_output_resolution(factor)  # sub-pixel ray centres (i + 0.5) / S of each pixel
        render = render_distance(model, camera, rgb=use_shadow)
        points = surface_points(render.rays.origins, render.rays.directions, render.distance, None,
                                depth_along_axis=False)
        if to_capture is not None:
            points = to_capture(points)
        local = box.to_local(points.double()).cpu()
        inside = box.contains_local(local)
        opaque = (torch.ones_like(inside) if render.accumulation is None
                  else render.accumulation.cpu() >= settings.min_accumulation)
        inside &= opaque
        kept = _ViewCandidates(inside.numpy(), local[inside].numpy())
        if use_floor:
            local_np = local.numpy()
            near = opaque.numpy() & floor_search_region(local_np, box.size)
            near_points = local_np[near]
            stride = max(1, len(near_points) // FLOOR_POINTS_PER_VIEW)
            floor_samples.append(near_points[::stride])
            if use_shadow:
                if render.rgb is None:
                    raise UserFacingError(f"The run's model ({type(model).__name__}) renders no colour, which the "
                                          f"shadow rule needs; pass --shadow-darkening 0 to mask the object alone.")
                kept.near, kept.near_points = near, near_points
                kept.near_luminance = render.rgb.float().mean(dim=-1).cpu().numpy()[near]
        views_kept.append(kept)
        if progress is not None:
            progress()
    derived = DerivedMasks()
    if use_floor and floor_samples:
        derived.floor = fit_floor(np.concatenate(floor_samples), box.size, settings.floor_margin * box.size[2])
    if use_shadow and derived.floor is not None:
        derived.shadow = find_shadow(np.concatenate([v.near_points for v in views_kept]),
                                     np.concatenate([v.near_luminance for v in views_kept]), box.size,
                                     derived.floor, settings.shadow_darkening)
    for (path, _), kept in zip(views, views_kept):
        inside = kept.inside
        if derived.floor is not None:
            inside = inside.copy()
            inside[inside] = derived.floor.height_above(kept.inside_points) > settings.floor_margin * box.size[2]
        if derived.shadow is not None:
            inside[kept.near] |= derived.shadow.contains(kept.near_points)
        mask = clean_mask(reduce_supersampled(inside, factor), settings.min_component, settings.dilation)
        derived.files.append(Path(path))
        derived.masks.append(mask)
    return derived


def check_coverage(derived: DerivedMasks, box: Box, settings: BoxMaskSettings) -> None:
    """Refuse a box that holds nothing in any view, or most of every view, before anything is written."""
    coverage = derived.coverage()
    where = ("the run's coordinates (the viewer's)" if settings.frame == "run" else "the capture's coordinates")
    if not any(c > 0 for c in coverage):
        raise DataError(f"The box (centre {box.center}, size {box.size}) contains no surface of the run in any of "
                        f"its {len(coverage)} views, so no mask was written. The box is read in {where}; check its "
                        f"centre and size against the viewer's Crop center and Crop scale (--frame capture for "
                        f"coordinates of the capture's transforms.json), or lower --min-accumulation if the run is "
                        f"barely trained.")
    if all(c > MOST_OF_THE_VIEW for c in coverage):
        raise DataError(f"The box (centre {box.center}, size {box.size}) covers more than "
                        f"{MOST_OF_THE_VIEW:.0%} of every view, so it holds the scene rather than one object; no mask "
                        f"was written. Shrink it around the object (the viewer's Crop Viewport shows what it holds).")


def write_masks(derived: DerivedMasks, folder: Path) -> None:
    """Each mask, enlarged (nearest) to its image's size, as a 0/255 PNG named by the image's stem."""
    from ns_diffusion_methods.data.images import image_size, save_image

    folder.mkdir(parents=True, exist_ok=True)
    for path, mask in zip(derived.files, derived.masks):
        width, height = image_size(path)
        if mask.shape != (height, width):
            mask = resize_mask(mask, height, width)
        save_image(mask.astype(np.uint8) * 255, folder / f"{path.stem}.png")


def run_capture(config: Any) -> Path:
    """The capture folder a run was trained on; only transforms.json captures can receive masks."""
    dataparser = config.pipeline.datamanager.dataparser
    name = type(dataparser).__name__
    data = Path(getattr(config, "data", None) or dataparser.data)
    if name not in ("NerfstudioDataParserConfig", "ObjectMaskDataParserConfig"):
        raise UserFacingError(f"The run was trained with {name}, but ns-diffusion masks writes masks into a "
                              f"nerfstudio capture (transforms.json, as ns-process-data writes it). Train the quick "
                              f"run with the nerfstudio-data dataparser on that capture.")
    return data


def _dataparser_transform(config: Any) -> Tuple[Tensor, float]:
    path = Path(config.get_base_dir()) / "dataparser_transforms.json"
    if not path.is_file():
        raise UserFacingError(f"{path} is missing; it holds the run's orientation and scale, which --frame capture "
                              f"needs. Use the run's own coordinates (--frame run, the viewer's) instead.")
    meta = json.loads(path.read_text())
    return torch.tensor(meta["transform"], dtype=torch.float64), float(meta["scale"])


def run_views(config: Any) -> List[Tuple[Path, Any]]:
    """Every frame of a run (its training and test split) as ``(image file, single camera)``, at the images' full
    size, as nerfstudio's inference mode parses them (no image is opened). The command and the viewer's panel render
    these same cameras, whatever resolution the viewer loaded the run at."""
    dataparser = config.pipeline.datamanager.dataparser.setup()
    if hasattr(dataparser, "downscale_factor"):
        dataparser.downscale_factor = 1  # what the datamanager does in inference mode
    views: List[Tuple[Path, Any]] = []
    for split in ("train", "test"):
        outputs = dataparser.get_dataparser_outputs(split=split)
        views += [(Path(f), outputs.cameras[i:i + 1]) for i, f in enumerate(outputs.image_filenames)]
    return views


def capture_transform(config: Any, settings: BoxMaskSettings) -> Optional[Callable[[Tensor], Tensor]]:
    """The map from run coordinates to the box's (``frame="capture"``), or None when the box is in the run's."""
    if settings.frame != "capture":
        return None
    transform, scale = _dataparser_transform(config)
    return lambda points: run_to_capture(points, transform, scale)


def masks_from_views(model: Any, views: Sequence[Tuple[Path, Any]], capture: Path, box: Box,
                     settings: BoxMaskSettings, output: Optional[Path] = None, in_place: bool = False,
                     to_capture: Optional[Callable[[Tensor], Tensor]] = None,
                     progress: Optional[Callable[[], None]] = None) -> Tuple[Any, DerivedMasks]:
    """Derive the masks of ``views`` with ``model``, refuse a bad box, write the capture (``add_masks``).

    Shared by the command (:func:`masks_from_run`) and the viewer's panel (:mod:`.masks_viewer`).

    Returns:
        add-masks' report and the derived masks (at render resolution).
    """
    from ns_diffusion_methods.data.add_masks import add_masks

    derived = derive_masks(model, views, box, settings, to_capture, progress)
    check_coverage(derived, box, settings)
    with tempfile.TemporaryDirectory(prefix="ns-diffusion-masks-") as folder:
        write_masks(derived, Path(folder))
        return add_masks(capture, Path(folder), output=output, in_place=in_place), derived


def masks_from_run(load_config: Path, box: Box, settings: BoxMaskSettings, output: Optional[Path] = None,
                   in_place: bool = False, data: Optional[Path] = None, console: Any = None) -> Any:
    """The command's work: load the run, derive every frame's mask, write the capture. Returns add-masks' report."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.engine.progress import progress_bars

    config, pipeline, _, _ = eval_setup(Path(load_config), test_mode="inference")
    capture = Path(data) if data is not None else run_capture(config)
    to_capture = capture_transform(config, settings)
    views = run_views(config)
    with progress_bars() as progress:
        task = progress.add_task("Rendering the depth of every frame", total=len(views))
        report, _ = masks_from_views(pipeline.model, views, capture, box, settings, output, in_place, to_capture,
                                     lambda: progress.advance(task))
    return report


def coverage_summary(derived: DerivedMasks) -> Dict[str, float]:
    """Min/mean/max fraction of each view the masks cover."""
    coverage = derived.coverage()
    return {"min": min(coverage), "mean": sum(coverage) / len(coverage), "max": max(coverage)}
