"""Synthetic captures for tests, demos and benchmarks, deterministic from a seed.

- :func:`write_object_removal`: a textured room with several shaded objects and one removable object, in nerfstudio's
  format (training views with the object and per-image object masks, evaluation views rendered *without* it) and in
  the SPIn-NeRF folder layout under ``spinnerf/``.
- :func:`write_sparse_views`: a textured room whose training views cover one side and whose evaluation views lie on
  the opposite side (the Difix3D setting).
- :func:`write_objects`: a category of procedural objects (1 to 3 primitives each) in the SRN layout, with
  ``meta.json`` holding the ground-truth shapes (the SSDNeRF / RenderDiffusion toy dataset).

Every writer builds the capture in a temporary folder next to ``output`` and renames it into place at the end, so an
interrupted run never leaves a half-written capture; an existing ``output`` is replaced only if it is a previous
capture (it holds ``capture.json``) or empty.

Object masks (``masks/*.png``, 255 = remove) mark exactly the pixels that change when the removable object is removed:
the object itself and its cast shadow (see :func:`~ns_diffusion_methods.synthetic.render.render_rays`). They are *not*
nerfstudio ``mask_path`` masks (1 = valid pixel); each frame names its mask under ``object_mask_path``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ns_diffusion_methods.data.images import save_image
from ns_diffusion_methods.errors import UserFacingError
from ns_diffusion_methods.geometry.visibility import project_points
from ns_diffusion_methods.synthetic.render import (
    HIT_BACKGROUND,
    HIT_WALL,
    camera_rays,
    reduce_subsamples,
    render_camera_subsamples,
    render_rays,
    single_threaded,
    to_image_uint8,
)
from ns_diffusion_methods.synthetic.scene import Floor, Light, Primitive, Scene, Texture, Walls

#: bump when the same seed starts producing different files
GENERATOR_VERSION = 1
GENERATOR_NAME = "ns-diffusion-synth"

#: how many times larger SPIn-NeRF's full-resolution ``images/`` are than ``images_4/`` (= the capture's images)
SPINNERF_DOWNSCALE = 4
#: scene captures render ``SCENE_SUPERSAMPLE²`` rays per pixel (= the SPIn-NeRF full-resolution pixels)
SCENE_SUPERSAMPLE = 4
#: object masks cover this fraction of every training image (the layout aims at 6-22 % on a quick estimate)
MASK_COVERAGE_RANGE = (0.05, 0.25)

HoleKind = Literal["seen", "unseen"]
"""Object-removal captures: ``seen``, cameras on a 160° arc, so much of what lies behind the object in an evaluation
view shows unmasked in other training views; ``unseen``, cameras on a narrow arc and training masks dilated by one
pixel, so little of it does (the layout is redrawn while a one-ray-per-pixel estimate of any evaluation view's
visible fraction exceeds :data:`UNSEEN_MAX_VISIBLE`)."""
#: half the camera arc of ``unseen`` captures, degrees (``seen``: 80)
UNSEEN_HALF_ARC_DEG = 6.0
#: ``unseen`` layouts are redrawn until no evaluation view has more of its hole visible unmasked in a training view
#: (estimated with one ray per pixel; the written capture's exact fractions are in its ``capture.json``)
UNSEEN_MAX_VISIBLE = 0.15

Progress = Callable[[int, int], None]
"""Progress callback: ``(views done, views total)``."""

#: flat object colours (the SRN-style objects and the room's objects draw from it)
PALETTE: Tuple[Tuple[float, float, float], ...] = (
    (0.85, 0.20, 0.15),  # red
    (0.20, 0.70, 0.30),  # green
    (0.20, 0.35, 0.85),  # blue
    (0.95, 0.80, 0.20),  # yellow
    (0.95, 0.50, 0.15),  # orange
    (0.60, 0.30, 0.75),  # purple
    (0.20, 0.75, 0.80),  # cyan
    (0.95, 0.55, 0.70),  # pink
)
_FLOOR_COLOURS = (((0.78, 0.72, 0.62), (0.55, 0.48, 0.40)), ((0.72, 0.72, 0.72), (0.45, 0.45, 0.48)),
                  ((0.76, 0.66, 0.55), (0.58, 0.42, 0.32)))
_WALL_COLOURS = (((0.62, 0.68, 0.75), (0.50, 0.55, 0.62)), ((0.80, 0.78, 0.70), (0.68, 0.64, 0.56)),
                 ((0.70, 0.75, 0.65), (0.58, 0.62, 0.52)))
_SKY = (0.72, 0.82, 0.95)


# --------------------------------------------------------------------------------------------------------------------
# Cameras


def look_at_opengl(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """A 4x4 OpenGL camera-to-world (looks down -z, +y up) at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return c2w


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """OpenGL c2w -> OpenCV c2w (x right, y down, z forward): negate rotation columns 1 and 2 (an involution)."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, 1:3] *= -1.0
    return out


def spherical_eye(radius: float, azimuth: float, elevation: float, target: Sequence[float] = (0, 0, 0)) -> np.ndarray:
    """Camera position at ``radius`` from ``target``; azimuth from +x toward +y, elevation above the xy plane (rad)."""
    return np.asarray(target, dtype=np.float64) + radius * np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])


# --------------------------------------------------------------------------------------------------------------------
# Writing helpers


def _is_capture(folder: Path) -> bool:
    try:
        return json.loads((folder / "capture.json").read_text(encoding="utf-8")).get("generator") == GENERATOR_NAME
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


@contextlib.contextmanager
def _atomic_output(output: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``output``; on success, it replaces ``output``.

    Rendering inside runs single-threaded (see :func:`~ns_diffusion_methods.synthetic.render.single_threaded`).
    """
    output = Path(output).absolute()
    if output.exists():
        if not output.is_dir():
            raise UserFacingError(f"The output {output} exists and is not a folder. Choose another --output.")
        if any(output.iterdir()) and not _is_capture(output):
            raise UserFacingError(
                f"The output folder {output} is not empty and is not a capture written by {GENERATOR_NAME} (it has "
                f"no capture.json). Choose a new or empty folder, or delete this one first.")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(partial, 0o777 & ~umask)  # mkdtemp makes it private; give it a normal folder's permissions
    try:
        with single_threaded():
            yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if output.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{output.name}.previous-", dir=output.parent))
        os.replace(output, previous / "capture")
        os.replace(partial, output)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(partial, output)


def _write_json(data: object, path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _capture_record(kind: str, seed: int, **fields: object) -> Dict[str, object]:
    return {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "kind": kind, "seed": int(seed),
            **fields}


def _check_sizes(image_size: int, num_views: int, num_eval_views: int) -> None:
    if image_size < 16:
        raise UserFacingError(f"`image_size` must be >= 16 pixels, but got {image_size}.")
    if num_views < 2 or num_eval_views < 1:
        raise UserFacingError(f"Need at least 2 training views and 1 evaluation view, but got `num_views`={num_views} "
                              f"and `num_eval_views`={num_eval_views}.")


# --------------------------------------------------------------------------------------------------------------------
# Room scenes (object-removal, sparse-views)


def _random_texture_for_object(rng: np.random.Generator, colour_index: int) -> Texture:
    style = rng.choice(["flat", "flat", "checker", "noise"])
    color = PALETTE[colour_index]
    if style == "checker":
        color2 = PALETTE[(colour_index + 1 + int(rng.integers(len(PALETTE) - 1))) % len(PALETTE)]
        return Texture("checker", color, color2, period=float(rng.uniform(0.12, 0.2)))
    if style == "noise":
        return Texture("noise", color, noise_scale=float(rng.uniform(0.06, 0.12)), noise_amplitude=0.7,
                       seed=int(rng.integers(1 << 20)))
    return Texture("flat", color)


def _random_primitive(rng: np.random.Generator, kind: str, xy: Tuple[float, float], ground: float,
                      size_range: Tuple[float, float], texture: Texture, **kwargs: object) -> Primitive:
    low, high = size_range
    if kind == "sphere":
        radius = float(rng.uniform(low, high))
        half = (radius, radius, radius)
        yaw = 0.0
    elif kind == "cylinder":
        radius = float(rng.uniform(low, high * 0.85))
        half = (radius, radius, float(rng.uniform(low, high)))
        yaw = 0.0
    else:
        half = tuple(float(v) for v in rng.uniform(low, high, size=3))
        yaw = float(rng.uniform(0.0, math.pi / 2))
    return Primitive(kind, (xy[0], xy[1], ground + half[2]), half, yaw=yaw, texture=texture, **kwargs)


def _room(rng: np.random.Generator) -> Tuple[Floor, Walls, Light]:
    floor_a, floor_b = _FLOOR_COLOURS[int(rng.integers(len(_FLOOR_COLOURS)))]
    wall_a, wall_b = _WALL_COLOURS[int(rng.integers(len(_WALL_COLOURS)))]
    floor = Floor(0.0, None, Texture("checker_noise", floor_a, floor_b, period=float(rng.uniform(0.4, 0.55)),
                                     noise_scale=float(rng.uniform(0.12, 0.18)), noise_amplitude=0.6,
                                     seed=int(rng.integers(1 << 20))))
    walls = Walls((3.2, 3.2), 0.0, 3.0, Texture("checker_noise", wall_a, wall_b, period=float(rng.uniform(0.7, 0.9)),
                                                 noise_scale=float(rng.uniform(0.15, 0.25)), noise_amplitude=0.7,
                                                 seed=int(rng.integers(1 << 20))))
    light_azimuth = float(rng.uniform(0.0, 2 * math.pi))
    light_elevation = math.radians(float(rng.uniform(55.0, 65.0)))
    light = Light(tuple(spherical_eye(1.0, light_azimuth, light_elevation)), intensity=0.75, ambient=0.3)
    return floor, walls, light


def _segment_point_distance(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
    return float(np.linalg.norm(a + t * ab - p))


def _room_cameras(rng: np.random.Generator, azimuths: np.ndarray, target: Tuple[float, float, float],
                  heights: Tuple[float, float]) -> List[np.ndarray]:
    """OpenGL c2w looking (roughly) at ``target`` from a ring of horizontal radius 2.3-2.6."""
    c2ws = []
    for azimuth in azimuths:
        radius = float(rng.uniform(2.3, 2.6))
        eye = (radius * math.cos(azimuth), radius * math.sin(azimuth), float(rng.uniform(*heights)))
        aim = (target[0] + float(rng.uniform(-0.1, 0.1)), target[1] + float(rng.uniform(-0.1, 0.1)), target[2])
        c2ws.append(look_at_opengl(eye, aim))
    return c2ws


def _intrinsics(image_size: int) -> Dict[str, float]:
    width = int(image_size)
    height = int(round(width * 3 / 4))
    focal = width / 2 / math.tan(math.radians(25.0))  # 50° horizontal field of view
    return {"w": width, "h": height, "fl_x": focal, "fl_y": focal, "cx": width / 2, "cy": height / 2}


def _mask_coverage(scene: Scene, c2w: np.ndarray, intr: Dict[str, float]) -> float:
    """Fraction of a (half-resolution, 2x2-supersampled) image the object mask covers: a quick estimate."""
    w, h = max(intr["w"] // 2, 8), max(intr["h"] // 2, 6)
    ratio = w / intr["w"]
    grid = render_camera_subsamples(scene, torch.from_numpy(c2w), intr["fl_x"] * ratio, intr["fl_y"] * ratio,
                                    intr["cx"] * ratio, intr["cy"] * ratio, w, h, supersample=2)
    return float(reduce_subsamples(grid, 2)[1].float().mean())


def _centre_top_is_lit(scene: Scene) -> bool:
    top = torch.tensor([scene.primitives[0].top_center()], dtype=torch.float64) + torch.tensor([[0.0, 0.0, 1e-6]])
    out = render_rays(scene, top, torch.tensor([scene.light.direction], dtype=torch.float64))
    return int(out["hit_id"][0]) in (HIT_BACKGROUND, HIT_WALL)  # nothing but a wall (which casts no shadow) above


def _room_layout(rng: np.random.Generator, intr: Dict[str, float], num_views: int, num_eval_views: int,
                 removal: bool, hole: HoleKind = "seen") -> Tuple[Scene, List[np.ndarray], List[np.ndarray]]:
    """A textured room with a flat-coloured object at the centre (``primitives[0]``) and 3-4 other objects.

    Every camera sees the centre object unoccluded, with its top face lit. ``removal``: the centre object is
    removable, cameras lie on one 160° arc (``hole="unseen"``: 12°, redrawn until little of the hole is visible in
    training views) with training and evaluation views interleaved, and every training mask covers 6-22 % of the image
    (estimated at half resolution). Otherwise (sparse views): training cameras on a 90° arc,
    evaluation cameras on the opposite 90° arc.
    """
    for _ in range(100):
        floor, walls, light = _room(rng)
        colours = rng.permutation(len(PALETTE))
        kind = str(rng.choice(["box", "cylinder", "sphere"]))
        centre = _random_primitive(rng, kind, (0.0, 0.0), 0.0, (0.26, 0.36), Texture("flat", PALETTE[colours[0]]),
                                   removable=removal, name=f"removable-{kind}" if removal else f"centre-{kind}")
        arc_centre = float(rng.uniform(0.0, 2 * math.pi))
        if removal:
            half_arc = math.radians(80.0 if hole == "seen" else UNSEEN_HALF_ARC_DEG)
            train_azimuths = arc_centre + np.linspace(-half_arc, half_arc, num_views)
            eval_azimuths = arc_centre + np.linspace(-half_arc * 0.85, half_arc * 0.85, num_eval_views)
        else:
            half_arc = math.radians(45.0)
            train_azimuths = arc_centre + np.linspace(-half_arc, half_arc, num_views)
            eval_azimuths = arc_centre + math.pi + np.linspace(-half_arc, half_arc, num_eval_views)
        target = (0.0, 0.0, 0.25)
        train_c2w = _room_cameras(rng, train_azimuths, target, (1.3, 1.7))
        eval_c2w = _room_cameras(rng, eval_azimuths, target, (1.15, 1.85))
        eyes = [c2w[:3, 3] for c2w in train_c2w + eval_c2w]

        primitives = [centre]
        for slot in range(int(rng.integers(3, 5))):
            for _attempt in range(200):
                distance = float(rng.uniform(0.8, 1.7))
                angle = float(rng.uniform(0.0, 2 * math.pi))
                candidate = _random_primitive(
                    rng, str(rng.choice(["box", "cylinder", "sphere"])),
                    (distance * math.cos(angle), distance * math.sin(angle)), 0.0, (0.18, 0.34),
                    _random_texture_for_object(rng, int(colours[1 + slot])), name=f"object-{slot}")
                apart = all(np.linalg.norm(np.array(candidate.center[:2]) - np.array(p.center[:2]))
                            > candidate.footprint_radius() + p.footprint_radius() + 0.1 for p in primitives)
                # bounding spheres clear of every camera's lines of sight to the centre object's centre and top
                clear = all(_segment_point_distance(eye, np.array(aim), np.array(candidate.center))
                            > candidate.bounding_radius() + centre.bounding_radius() + 0.05
                            for eye in eyes for aim in (centre.center, centre.top_center()))
                if apart and clear:
                    primitives.append(candidate)
                    break
        if len(primitives) < 4:
            continue
        scene = Scene(primitives, floor, walls, light, background=_SKY, supersample=SCENE_SUPERSAMPLE)
        if not _centre_top_is_lit(scene):
            continue
        if removal:
            coverage = [_mask_coverage(scene, c2w, intr) for c2w in train_c2w]
            low, high = MASK_COVERAGE_RANGE  # a margin for the estimate's error
            if not (low + 0.01 <= min(coverage) and max(coverage) <= high - 0.03):
                continue
            if hole == "unseen" and max(_quick_visibility(scene, intr, train_c2w, eval_c2w)) > UNSEEN_MAX_VISIBLE:
                continue
        return scene, train_c2w, eval_c2w
    raise RuntimeError("Could not lay out a room scene in 100 attempts; this is a bug in the generator.")


def hole_visibility(scene: Scene, intr: Dict[str, float], train_c2w: Sequence[np.ndarray],
                    train_masks: Sequence[np.ndarray], eval_c2w: Sequence[np.ndarray],
                    eval_masks: Sequence[np.ndarray]) -> List[float]:
    """Per evaluation view, the fraction of its hole that some training view shows unmasked.

    A hole pixel (``eval_masks[e]`` True) is traced through its centre into the scene *without* the removable object
    to the surface point behind the object. That point is visible in training view ``t`` when it projects inside the
    image, in front of the camera, onto a pixel that ``train_masks[t]`` leaves unmasked (so it is supervised by the
    captured image, not in the object or its shadow), and the straight segment from the camera to the point hits
    nothing before it (the object included). Background rays that hit nothing stand for a point far along the ray.

    Args:
        scene: the capture's scene (``scene.json``).
        intr: intrinsics ``w, h, fl_x, fl_y, cx, cy`` (shared by all views).
        train_c2w, eval_c2w: OpenGL camera-to-world matrices (4x4 or 3x4) in the scene's frame.
        train_masks, eval_masks: bool ``[h, w]`` object masks (True = object region) of those views.

    Returns:
        One fraction in [0, 1] per evaluation view (NaN for an empty hole).
    """
    width, height = int(intr["w"]), int(intr["h"])
    fx, fy, cx, cy = float(intr["fl_x"]), float(intr["fl_y"]), float(intr["cx"]), float(intr["cy"])
    fractions = []
    for c2w, mask in zip(eval_c2w, eval_masks):
        hole = torch.from_numpy(np.asarray(mask, dtype=bool))
        if not bool(hole.any()):
            fractions.append(float("nan"))
            continue
        origins, directions = camera_rays(torch.from_numpy(np.asarray(c2w)), fx, fy, cx, cy, width, height)
        origins, directions = origins[hole], directions[hole]
        behind = render_rays(scene, origins, directions, include_removable=False)["depth"]
        points = origins + behind.clamp(max=1e3)[:, None] * directions
        visible = torch.zeros(points.shape[0], dtype=torch.bool)
        for view_c2w, view_mask in zip(train_c2w, train_masks):
            matrix = torch.as_tensor(np.asarray(view_c2w), dtype=torch.float64)[:3]
            centre = matrix[:, 3]
            row, col, _, inside = project_points(points, matrix, fx, fy, cx, cy, width, height)
            unmasked = torch.zeros_like(inside)
            view_mask = torch.from_numpy(np.asarray(view_mask, dtype=bool))
            unmasked[inside] = ~view_mask[row[inside], col[inside]]
            candidates = inside & unmasked & ~visible
            if not bool(candidates.any()):
                continue
            towards = points[candidates] - centre
            distance = towards.norm(dim=-1)
            first = render_rays(scene, centre.expand_as(towards), towards, include_removable=True)["depth"]
            visible[candidates] = first >= distance * (1 - 1e-6) - 1e-6
        fractions.append(float(visible.double().mean()))
    return fractions


def capture_hole_visibility(capture: Union[str, Path]) -> List[float]:
    """:func:`hole_visibility` of an object-removal capture written by :func:`write_object_removal` (from its
    ``scene.json``, ``transforms.json`` and ``masks/``): one fraction per evaluation view, in frame order."""
    from PIL import Image

    capture = Path(capture)
    scene = Scene.from_json(capture / "scene.json")
    meta = json.loads((capture / "transforms.json").read_text(encoding="utf-8"))
    views: Dict[str, Tuple[list, list]] = {"train": ([], []), "eval": ([], [])}
    for frame in meta["frames"]:
        split = "train" if "_train_" in str(frame["file_path"]) else "eval"
        with Image.open(capture / frame["object_mask_path"]) as image:
            views[split][1].append(np.asarray(image.convert("L")) > 127)
        views[split][0].append(np.asarray(frame["transform_matrix"], dtype=np.float64))
    return hole_visibility(scene, meta, *views["train"], *views["eval"])


def _quick_visibility(scene: Scene, intr: Dict[str, float], train_c2w: List[np.ndarray],
                      eval_c2w: List[np.ndarray]) -> List[float]:
    """:func:`hole_visibility` with masks from one ray per pixel (a layout check; the capture records the exact one
    from its written masks)."""
    def masks(c2ws: List[np.ndarray]) -> List[np.ndarray]:
        return [reduce_subsamples(_render_view(scene, c2w, intr, True, supersample=1), 1)[1].numpy() for c2w in c2ws]

    train_masks = [dilate_mask(mask) for mask in masks(train_c2w)]
    return hole_visibility(scene, intr, train_c2w, train_masks, eval_c2w, masks(eval_c2w))


def dilate_mask(mask: np.ndarray) -> np.ndarray:
    """A bool ``[h, w]`` mask grown by one pixel (3 x 3 square): the training masks of ``unseen`` captures."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    height, width = padded.shape[0] - 2, padded.shape[1] - 2
    return np.any([padded[dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)], axis=0)


def _render_view(scene: Scene, c2w: np.ndarray, intr: Dict[str, float],
                 include_removable: bool, supersample: Optional[int] = None) -> Dict[str, torch.Tensor]:
    return render_camera_subsamples(scene, torch.from_numpy(c2w), intr["fl_x"], intr["fl_y"], intr["cx"], intr["cy"],
                                    intr["w"], intr["h"], include_removable=include_removable,
                                    supersample=supersample)


def _frame(name: str, c2w: np.ndarray, mask_name: Optional[str]) -> Dict[str, object]:
    frame: Dict[str, object] = {"file_path": f"images/{name}.png", "transform_matrix": c2w.tolist()}
    if mask_name is not None:
        frame["object_mask_path"] = f"masks/{mask_name}.png"
    return frame


def _transforms(intr: Dict[str, float], frames: List[Dict[str, object]]) -> Dict[str, object]:
    train = [f["file_path"] for f in frames if "_train_" in str(f["file_path"])]
    evals = [f["file_path"] for f in frames if "_eval_" in str(f["file_path"])]
    return {
        "camera_model": "OPENCV",
        **intr,
        "frames": frames,
        # explicit split lists: stock nerfstudio splits the capture even without `--eval-mode filename`
        "train_filenames": train,
        "val_filenames": evals,
        "test_filenames": evals,
    }


def _write_scene_capture(
    kind: str,
    output: Union[str, Path],
    seed: int,
    image_size: int,
    num_views: int,
    num_eval_views: int,
    progress: Optional[Progress],
    hole: HoleKind = "seen",
) -> Path:
    _check_sizes(image_size, num_views, num_eval_views)
    if hole not in ("seen", "unseen"):
        raise UserFacingError(f"`hole` must be 'seen' or 'unseen', but got {hole!r}.")
    rng = np.random.default_rng(seed)
    intr = _intrinsics(image_size)
    removal = kind == "object-removal"
    with _atomic_output(Path(output)) as folder:
        scene, train_c2w, eval_c2w = _room_layout(rng, intr, num_views, num_eval_views, removal, hole)
        masks: Dict[str, List[np.ndarray]] = {"train": [], "eval": []}
        total = len(train_c2w) + len(eval_c2w)
        frames: List[Dict[str, object]] = []
        spinnerf_views = []  # (split, index, full-resolution render, object mask, c2w)
        coverage = []
        done = 0
        for split, c2ws in (("train", train_c2w), ("eval", eval_c2w)):
            for index, c2w in enumerate(c2ws):
                name = f"frame_{split}_{index:05d}"
                # training views show the object; evaluation views are the ground truth without it
                grid = _render_view(scene, c2w, intr, include_removable=(split == "train" or not removal))
                rgb, _ = reduce_subsamples(grid, scene.supersample)
                save_image(to_image_uint8(rgb).numpy(), folder / "images" / f"{name}.png")
                mask = None
                if removal:
                    # the mask of an evaluation view: where the object would be, from a render with it
                    with_object = grid if split == "train" else _render_view(scene, c2w, intr, include_removable=True)
                    mask = reduce_subsamples(with_object, scene.supersample)[1].numpy()
                    if split == "train" and hole == "unseen":
                        mask = dilate_mask(mask)
                    masks[split].append(mask)
                    if split == "train":
                        coverage.append(float(mask.mean()))
                    save_image((mask * 255).astype(np.uint8), folder / "masks" / f"{name}.png")
                    spinnerf_views.append((split, index, grid, mask, c2w))
                frames.append(_frame(name, c2w, name if removal else None))
                done += 1
                if progress is not None:
                    progress(done, total)
        _write_json(_transforms(intr, frames), folder / "transforms.json")
        scene.to_json(folder / "scene.json")
        record = _capture_record(
            kind, seed, image_size=int(image_size), width=intr["w"], height=intr["h"], num_views=len(train_c2w),
            num_eval_views=len(eval_c2w), supersample=scene.supersample,
            eval_mode="filename (frame_train_* / frame_eval_*; transforms.json also lists the splits)")
        if removal:
            record.update(
                removable_primitive=scene.removable_index,
                object_masks="masks/<frame>.png, 255 = pixels that change when the removable object is removed "
                             "(the object and its cast shadow); referenced per frame as object_mask_path",
                mask_coverage={"min": min(coverage), "max": max(coverage)},
                spinnerf={"folder": "spinnerf", "num_test_views": len(eval_c2w), "num_train_views": len(train_c2w),
                          "downscale": SPINNERF_DOWNSCALE})
            if hole == "unseen":  # (absent from `seen` captures, whose files stay as they were)
                record.update(hole="unseen: cameras on a narrow arc, training masks dilated by 1 px",
                              hole_visible_fraction=hole_visibility(scene, intr, train_c2w, masks["train"], eval_c2w,
                                                                    masks["eval"]))
            _write_spinnerf(folder / "spinnerf", scene, intr, spinnerf_views, rng)
        _write_json(record, folder / "capture.json")
    return Path(output)


def write_object_removal(
    output: Union[str, Path],
    seed: int = 0,
    image_size: int = 96,
    num_views: int = 24,
    num_eval_views: int = 8,
    progress: Optional[Progress] = None,
    hole: HoleKind = "seen",
) -> Path:
    """Write an object-removal capture (nerfstudio format + SPIn-NeRF layout) to ``output``.

    Args:
        output: the capture folder (created; replaced if it is a previous capture).
        seed: everything is deterministic from it. Default is 0.
        image_size: image width in pixels; the height is 3/4 of it. Default is 96.
        num_views: training views (with the object, with masks). Default is 24.
        num_eval_views: evaluation views (rendered without the object). Default is 8.
        progress: optional callback ``(views done, views total)``.
        hole: ``seen`` (default): cameras on a 160° arc, so most of what hides behind the object in an evaluation
            view shows unmasked in some training view (about 55-65 %, :func:`capture_hole_visibility`); ``unseen``:
            cameras on a 12° arc and training masks dilated by one pixel, so little of it does (under 20 %, mostly
            at the hole's rim); ``capture.json`` then records each evaluation view's ``hole_visible_fraction``.

    Returns:
        ``output`` as a Path. It holds ``images/frame_{train,eval}_NNNNN.png``, ``masks/`` (same names; 255 = the
        removable object and its shadow), ``transforms.json`` (OpenGL c2w, ``object_mask_path`` per frame),
        ``scene.json``, ``capture.json`` and ``spinnerf/`` (see :func:`_write_spinnerf`).
    """
    return _write_scene_capture("object-removal", output, seed, image_size, num_views, num_eval_views, progress,
                                hole)


def write_sparse_views(
    output: Union[str, Path],
    seed: int = 0,
    image_size: int = 96,
    num_views: int = 24,
    num_eval_views: int = 8,
    progress: Optional[Progress] = None,
) -> Path:
    """Write a sparse-views capture: training views on a 90° arc, evaluation views on the opposite 90° arc.

    Args and layout as :func:`write_object_removal`, without masks or ``spinnerf/``.
    """
    return _write_scene_capture("sparse-views", output, seed, image_size, num_views, num_eval_views, progress)


# --------------------------------------------------------------------------------------------------------------------
# SPIn-NeRF layout


def _write_spinnerf(folder: Path, scene: Scene, intr: Dict[str, float], views: list, rng: np.random.Generator) -> None:
    """The capture in SPIn-NeRF's released layout.

    ``images/`` full-resolution JPGs (``SPINNERF_DOWNSCALE`` times the capture's size), ``images_4/`` the capture's
    PNGs, ``images_4/label/`` training masks and ``images_4/test_label/`` test masks (values 0/1, 1 = remove),
    ``sparse/0/`` a COLMAP model of the full-resolution images, ``poses_bounds.npy`` (LLFF). Sorted file names put
    the test views (without the object) first, as in the real data set.
    """
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    factor = SPINNERF_DOWNSCALE
    assert scene.supersample == factor, (scene.supersample, factor)
    full = {"w": intr["w"] * factor, "h": intr["h"] * factor, "f": intr["fl_x"] * factor,
            "cx": intr["cx"] * factor, "cy": intr["cy"] * factor}
    ordered = [v for v in views if v[0] == "eval"] + [v for v in views if v[0] == "train"]
    poses_bounds = []
    images = {}
    points_xyz, points_rgb = [], []
    for number, (split, _index, grid, mask, c2w) in enumerate(ordered):
        stem = f"img_{number:03d}"
        # the subsample grid is the full-resolution image (one ray per pixel at `factor` times the size)
        full_rgb = to_image_uint8(grid["rgb"]).numpy()
        save_image(full_rgb, folder / "images" / f"{stem}.jpg")  # JPEG, quality 95
        small = to_image_uint8(reduce_subsamples(grid, factor)[0]).numpy()
        save_image(small, folder / "images_4" / f"{stem}.png")
        label_dir = "label" if split == "train" else "test_label"
        save_image(mask.astype(np.uint8), folder / "images_4" / label_dir / f"{stem}.png")

        c2w_cv = opengl_to_opencv(c2w)
        w2c = np.linalg.inv(c2w_cv)
        images[number + 1] = colmap.Image(id=number + 1, qvec=colmap.rotmat2qvec(w2c[:3, :3]), tvec=w2c[:3, 3],
                                          camera_id=1, name=f"{stem}.jpg", xys=np.zeros((0, 2)),
                                          point3D_ids=np.zeros((0,), dtype=np.int64))
        # LLFF: columns [down, right, backwards] = OpenCV [y, x, -z], then [H, W, f]; bounds from z-depths
        llff = np.concatenate([c2w_cv[:3, 1:2], c2w_cv[:3, 0:1], -c2w_cv[:3, 2:3], c2w_cv[:3, 3:4],
                               np.array([[full["h"]], [full["w"]], [full["f"]]])], axis=1)
        forward = torch.from_numpy(c2w_cv[:3, 2])
        z_depth = (grid["depth"] * (grid["directions"] @ forward)).numpy()
        finite = z_depth[np.isfinite(z_depth)]
        near, far = np.percentile(finite, 0.1), np.percentile(finite, 99.9)
        poses_bounds.append(np.concatenate([llff.ravel(), [near, far]]))
        if split == "train":
            # a sparse "SfM" point cloud: surface points seen by the training views
            hit = (grid["hit_id"] != HIT_BACKGROUND).numpy().reshape(-1)
            candidates = np.flatnonzero(hit)
            pick = rng.choice(candidates, size=min(150, candidates.size), replace=False)
            eye = c2w[:3, 3]
            dirs = grid["directions"].reshape(-1, 3).numpy()[pick]
            depth = grid["depth"].reshape(-1).numpy()[pick]
            points_xyz.append(eye + depth[:, None] * dirs)
            points_rgb.append(full_rgb.reshape(-1, 3)[pick])
    (folder / "sparse" / "0").mkdir(parents=True, exist_ok=True)
    cameras = {1: colmap.Camera(id=1, model="PINHOLE", width=full["w"], height=full["h"],
                                params=np.array([full["f"], full["f"], full["cx"], full["cy"]]))}
    colmap.write_cameras_binary(cameras, folder / "sparse" / "0" / "cameras.bin")
    colmap.write_images_binary(images, folder / "sparse" / "0" / "images.bin")
    xyz, rgb = np.concatenate(points_xyz), np.concatenate(points_rgb)
    points = {i + 1: colmap.Point3D(id=i + 1, xyz=xyz[i], rgb=rgb[i], error=0.0, image_ids=np.zeros((0,), np.int64),
                                    point2D_idxs=np.zeros((0,), np.int64)) for i in range(len(xyz))}
    colmap.write_points3D_binary(points, folder / "sparse" / "0" / "points3D.bin")
    np.save(folder / "poses_bounds.npy", np.stack(poses_bounds).astype(np.float64))


# --------------------------------------------------------------------------------------------------------------------
# SRN-style objects

#: SRN-style camera and object constants (as in the ShapeNet-SRN renders used by SSDNeRF and RenderDiffusion)
OBJECT_CAMERA_RADIUS = 2.6
OBJECT_FOCAL_RATIO = 1.025  # SRN cars: 131.25 px at 128 px
OBJECT_FLOOR_Z = -0.35
OBJECT_ELEVATION_RANGE_DEG = (10.0, 60.0)
OBJECT_TEST_ELEVATION_DEG = 30.0
OBJECT_SUPERSAMPLE = 2
OBJECT_LIGHT = Light((0.4, -0.3, 0.87), intensity=0.7, ambient=0.35)


def _random_object(rng: np.random.Generator, max_primitives: int, background: str) -> Scene:
    """1 to ``max_primitives`` primitives near the origin, resting on z = -0.35, sizes 0.15-0.35, palette colours."""
    count = int(rng.integers(1, max_primitives + 1))
    primitives: List[Primitive] = []
    for _attempt in range(200):
        if len(primitives) == count:
            break
        kind = str(rng.choice(["sphere", "box", "cylinder"]))
        spread = 0.15 if not primitives else 0.45
        xy = (float(rng.uniform(-spread, spread)), float(rng.uniform(-spread, spread)))
        colour = PALETTE[int(rng.integers(len(PALETTE)))]
        candidate = _random_primitive(rng, kind, xy, OBJECT_FLOOR_Z, (0.15, 0.35), Texture("flat", colour),
                                      name=f"{kind}-{len(primitives)}")
        inside = all(abs(c) + candidate.footprint_radius() <= 0.85 for c in xy)
        apart = all(np.linalg.norm(np.array(xy) - np.array(p.center[:2]))
                    > candidate.footprint_radius() + p.footprint_radius() + 0.02 for p in primitives)
        if inside and apart:
            primitives.append(candidate)
    if background == "floor":
        floor = Floor(OBJECT_FLOOR_Z, 0.9, Texture("flat", (0.8, 0.8, 0.78)))
        return Scene(primitives, floor, None, OBJECT_LIGHT, background=(0.5, 0.5, 0.5), supersample=OBJECT_SUPERSAMPLE)
    return Scene(primitives, None, None, OBJECT_LIGHT, background=(1.0, 1.0, 1.0), supersample=OBJECT_SUPERSAMPLE)


def _object_cameras(rng: np.random.Generator, split: str, num_views: int) -> List[Tuple[float, float]]:
    """(azimuth, elevation) in radians: random upper-hemisphere views for train, an even ring for test."""
    if split == "train":
        low, high = (math.radians(v) for v in OBJECT_ELEVATION_RANGE_DEG)
        return [(float(rng.uniform(0.0, 2 * math.pi)), float(rng.uniform(low, high))) for _ in range(num_views)]
    elevation = math.radians(OBJECT_TEST_ELEVATION_DEG)
    return [(2 * math.pi * k / num_views, elevation) for k in range(num_views)]


def write_objects(
    output: Union[str, Path],
    seed: int = 0,
    image_size: int = 32,
    num_train: int = 64,
    num_test: int = 8,
    views: Tuple[int, int] = (16, 24),
    background: Literal["white", "floor"] = "white",
    max_primitives: int = 3,
    progress: Optional[Progress] = None,
) -> Path:
    """Write a category of procedural objects in the SRN layout.

    Args:
        output: the dataset folder (created; replaced if it is a previous capture).
        seed: everything is deterministic from it. Default is 0.
        image_size: square image size in pixels. Default is 32.
        num_train: training objects. Default is 64.
        num_test: test objects. Default is 8.
        views: (views per training object, views per test object). Training views are random (azimuth uniform,
            elevation uniform in [10°, 60°]); test views are an evenly spaced azimuth ring at 30° elevation starting
            at azimuth 0, so view ``k`` is the same direction for every test object. Default is (16, 24).
        background: ``white`` (no floor; SSDNeRF's white background) or ``floor`` (a floor disc of radius 0.9 with
            hard shadows and a grey backdrop). Default is ``white``.
        max_primitives: 1 to this many primitives per object. Default is 3.
        progress: optional callback ``(views done, views total)``.

    Returns:
        ``output`` as a Path, holding ``train/<obj>/`` and ``test/<obj>/`` (``rgb/NNNNNN.png``, ``pose/NNNNNN.txt``
        = 16 floats, row-major 4x4 OpenCV camera-to-world, ``intrinsics.txt``), ``meta.json`` (generator parameters,
        per-object scene with primitive parameters and view angles) and ``capture.json``. Cameras sit at distance 2.6
        from the origin looking at it, +z up, focal 1.025 x image size, principal point at the image centre.
    """
    if background not in ("white", "floor"):
        raise UserFacingError(f"`background` must be 'white' or 'floor', but got {background!r}.")
    if image_size < 8 or num_train < 1 or num_test < 0 or min(views) < 1 or max_primitives < 1:
        raise UserFacingError(f"Invalid sizes: image_size={image_size} (>= 8), num_train={num_train} (>= 1), "
                              f"num_test={num_test} (>= 0), views={views} (>= 1 each), max_primitives="
                              f"{max_primitives} (>= 1).")
    rng = np.random.default_rng(seed)
    size = int(image_size)
    focal = OBJECT_FOCAL_RATIO * size
    centre = size / 2
    total = num_train * views[0] + num_test * views[1]
    meta: Dict[str, object] = {
        "generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": int(seed), "image_size": size,
        "focal": focal, "cx": centre, "cy": centre, "camera_radius": OBJECT_CAMERA_RADIUS, "look_at": [0.0, 0.0, 0.0],
        "up": [0.0, 0.0, 1.0], "pose_convention": "OpenCV camera-to-world (x right, y down, z forward)",
        "train_elevation_range_deg": list(OBJECT_ELEVATION_RANGE_DEG),
        "test_elevation_deg": OBJECT_TEST_ELEVATION_DEG, "views": list(views), "background": background,
        "max_primitives": max_primitives, "floor_z": OBJECT_FLOOR_Z, "supersample": OBJECT_SUPERSAMPLE,
        "objects": {},
    }
    done = 0
    with _atomic_output(Path(output)) as folder:
        number = 0
        for split, count, num_views in (("train", num_train, views[0]), ("test", num_test, views[1])):
            for _ in range(count):
                name = f"obj_{number:05d}"
                number += 1
                scene = _random_object(rng, max_primitives, background)
                angles = _object_cameras(rng, split, num_views)
                c2ws = [look_at_opengl(spherical_eye(OBJECT_CAMERA_RADIUS, az, el), (0.0, 0.0, 0.0))
                        for az, el in angles]
                # all views of an object in one batch of rays: [V, H*s, W*s, 3]
                s = scene.supersample
                rays = [_object_rays(c2w, focal, centre, size, s) for c2w in c2ws]
                origins = torch.cat([r[0] for r in rays])
                directions = torch.cat([r[1] for r in rays])
                out = render_rays(scene, origins, directions)
                rgb = out["rgb"].reshape(num_views, size, s, size, s, 3).mean(dim=(2, 4))
                images = to_image_uint8(rgb).numpy()
                write_srn_object(folder / split / name, c2ws, images, focal, centre, size)
                meta["objects"][name] = {
                    "split": split, "scene": scene.to_dict(),
                    "views": [{"azimuth": az, "elevation": el} for az, el in angles]}
                done += num_views
                if progress is not None:
                    progress(done, total)
        _write_json(meta, folder / "meta.json")
        _write_json(_capture_record("objects", seed, image_size=size, num_train=num_train, num_test=num_test,
                                    views=list(views), background=background, max_primitives=max_primitives),
                    folder / "capture.json")
    return Path(output)


def write_srn_object(obj_dir: Path, c2ws: Sequence[np.ndarray], images: np.ndarray, focal: float, centre: float,
                     size: int, masks: Optional[np.ndarray] = None) -> None:
    """One object in the SRN layout: ``rgb/NNNNNN.png``, ``pose/NNNNNN.txt`` (OpenCV camera-to-world, from the
    OpenGL ``c2ws``), ``intrinsics.txt`` and, with ``masks`` (``[V, H, W]`` bool), ``mask/NNNNNN.png`` (0/255)."""
    (obj_dir / "pose").mkdir(parents=True)
    for view, (c2w, image) in enumerate(zip(c2ws, images)):
        save_image(image, obj_dir / "rgb" / f"{view:06d}.png")
        if masks is not None:
            save_image(masks[view].astype(np.uint8) * 255, obj_dir / "mask" / f"{view:06d}.png")
        pose = opengl_to_opencv(c2w).reshape(-1)
        (obj_dir / "pose" / f"{view:06d}.txt").write_text(" ".join(repr(float(v)) for v in pose) + "\n",
                                                            encoding="utf-8")
    (obj_dir / "intrinsics.txt").write_text(f"{focal!r} {centre!r} {centre!r} 0.\n0. 0. 0.\n1.\n{size} {size}\n",
                                            encoding="utf-8")


def _object_rays(c2w: np.ndarray, focal: float, centre: float, size: int,
                 supersample: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flattened subsample rays of a square SRN-style camera (focal ``focal``, principal point ``centre``)."""
    origins, directions = camera_rays(torch.from_numpy(c2w), focal, focal, centre, centre, size, size, supersample)
    return origins.reshape(-1, 3), directions.reshape(-1, 3)
