"""Varied single objects on a floor, in the SRN layout, with per-view object masks (``write_varied_objects``).

The ``objects`` writer (:func:`ns_diffusion_methods.synthetic.captures.write_objects`) draws small objects (a few
pixels wide at 32×32) from a palette of 8 colours, so the shared floor and backdrop fill almost every image and an
input-free guess (the mean training image) scores as well as a reconstruction. Here the object carries the
information: one primitive (sphere, yaw-rotated box or cylinder) whose **shape, size (half-extents 0.3-0.65),
colour (any hue, saturation 0.45-1, value 0.45-1) and placement (anywhere within 0.25 of the centre)** vary widely, so
it covers roughly 10-40 % of each image. Floor disc (radius 0.9, z = -0.35), light and grey backdrop are the
``objects --background floor`` ones, as are the cameras (distance 2.6, focal 1.025 × size; training views at random
azimuths and elevations 10-60°, test views on a ring of even azimuths at 30°).

Besides ``rgb/`` and ``pose/`` every object folder holds ``mask/NNNNNN.png``: 255 where the pixel differs from the
same view rendered without the object (the object and its cast shadow, any of the 2×2 subsamples), 0 elsewhere.
Scoring a method only on these pixels measures what it got right about the object rather than the background.
"""

from __future__ import annotations

import colorsys
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ns_diffusion_methods.errors import UserFacingError
from ns_diffusion_methods.synthetic.captures import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    OBJECT_CAMERA_RADIUS,
    OBJECT_FLOOR_Z,
    OBJECT_FOCAL_RATIO,
    OBJECT_LIGHT,
    OBJECT_SUPERSAMPLE,
    Progress,
    _atomic_output,
    _capture_record,
    _object_cameras,
    _object_rays,
    _write_json,
    look_at_opengl,
    spherical_eye,
    write_srn_object,
)
from ns_diffusion_methods.synthetic.render import render_rays, to_image_uint8
from ns_diffusion_methods.synthetic.scene import Floor, Primitive, Scene, Texture

#: half-extent range of the primitives (box units)
SIZE_RANGE = (0.3, 0.65)
#: the primitive's centre lies within this distance of the z axis
PLACEMENT_RADIUS = 0.25
#: floor disc radius, colour and backdrop (as ``objects --background floor``)
FLOOR_RADIUS = 0.9
FLOOR_COLOUR = (0.8, 0.8, 0.78)
BACKDROP = (0.5, 0.5, 0.5)
#: the whole primitive stays within this distance of the z axis (inside the floor disc and the [-1, 1]^3 box)
MAX_FOOTPRINT = 0.97


def random_varied_object(rng: np.random.Generator) -> Scene:
    """One primitive of random kind, size, colour and placement on the floor disc (see the module docstring)."""
    low, high = SIZE_RANGE
    for _attempt in range(100):
        kind = str(rng.choice(["sphere", "box", "cylinder"]))
        if kind == "sphere":
            half = (float(rng.uniform(low, high)),) * 3
            yaw = 0.0
        elif kind == "cylinder":
            radius = float(rng.uniform(low, high * 0.9))
            half = (radius, radius, float(rng.uniform(low, high)))
            yaw = 0.0
        else:
            half = tuple(float(v) for v in rng.uniform(low, high * 0.9, size=3))
            yaw = float(rng.uniform(0.0, math.pi / 2))
        distance, angle = PLACEMENT_RADIUS * math.sqrt(float(rng.uniform())), float(rng.uniform(0, 2 * math.pi))
        xy = (distance * math.cos(angle), distance * math.sin(angle))
        hue, saturation, value = float(rng.uniform()), float(rng.uniform(0.45, 1.0)), float(rng.uniform(0.45, 1.0))
        colour = tuple(float(c) for c in colorsys.hsv_to_rgb(hue, saturation, value))
        primitive = Primitive(kind, (xy[0], xy[1], OBJECT_FLOOR_Z + half[2]), half, yaw=yaw,
                              texture=Texture("flat", colour), removable=True, name=kind)
        if distance + primitive.footprint_radius() <= MAX_FOOTPRINT:
            break
    floor = Floor(OBJECT_FLOOR_Z, FLOOR_RADIUS, Texture("flat", FLOOR_COLOUR))
    return Scene([primitive], floor, None, OBJECT_LIGHT, background=BACKDROP, supersample=OBJECT_SUPERSAMPLE)


def render_object_views(scene: Scene, c2ws: List[np.ndarray], size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Render OpenGL cameras ``c2ws`` of an object at ``size``×``size``.

    Returns:
        ``uint8 [V, size, size, 3]`` images and ``bool [V, size, size]`` object masks (the pixel differs from the
        object-free render: the object or its shadow covers any of its subsamples).
    """
    s = scene.supersample
    focal, centre = OBJECT_FOCAL_RATIO * size, size / 2
    rays = [_object_rays(c2w, focal, centre, size, s) for c2w in c2ws]
    out = render_rays(scene, torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays]))
    views = len(c2ws)
    rgb = out["rgb"].reshape(views, size, s, size, s, 3).mean(dim=(2, 4))
    changed = (out["removable_hit"] | out["removable_shadow"]).reshape(views, size, s, size, s).any(dim=4).any(dim=2)
    return to_image_uint8(rgb).numpy(), changed.numpy()


def write_varied_objects(
    output: Union[str, Path],
    seed: int = 0,
    image_size: int = 32,
    num_train: int = 256,
    num_test: int = 32,
    views: Tuple[int, int] = (16, 24),
    progress: Optional[Progress] = None,
) -> Path:
    """Write varied single objects on a floor in the SRN layout, with object masks.

    Args:
        output: the dataset folder (created; replaced if it is a previous capture).
        seed: everything is deterministic from it.
        image_size: square image size in pixels.
        num_train: training objects.
        num_test: test objects.
        views: (views per training object, views per test object); training views are random, test views a ring
            (view ``k`` at azimuth ``2πk / V`` for every test object).
        progress: optional callback ``(views done, views total)``.

    Returns:
        ``output`` as a Path: ``train/<obj>/`` and ``test/<obj>/`` with ``rgb/``, ``pose/``, ``mask/`` and
        ``intrinsics.txt`` as the ``objects`` writer's (plus ``mask/``), ``meta.json`` (each object's scene and view
        angles; ``generator`` = ``ns-diffusion-synth`` so ``srn-data`` keeps the box units) and ``capture.json``.
    """
    if image_size < 8 or num_train < 1 or num_test < 0 or min(views) < 1:
        raise UserFacingError(f"Invalid sizes: image_size={image_size} (>= 8), num_train={num_train} (>= 1), "
                              f"num_test={num_test} (>= 0), views={views} (>= 1 each).")
    rng = np.random.default_rng(seed)
    size = int(image_size)
    focal, centre = OBJECT_FOCAL_RATIO * size, size / 2
    total = num_train * views[0] + num_test * views[1]
    meta: Dict[str, object] = {
        "generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "kind": "varied-objects",
        "seed": int(seed), "image_size": size, "focal": focal, "cx": centre, "cy": centre,
        "camera_radius": OBJECT_CAMERA_RADIUS, "look_at": [0.0, 0.0, 0.0], "up": [0.0, 0.0, 1.0],
        "pose_convention": "OpenCV camera-to-world (x right, y down, z forward)", "views": list(views),
        "background": "floor", "floor_z": OBJECT_FLOOR_Z, "supersample": OBJECT_SUPERSAMPLE,
        "mask": "mask/NNNNNN.png: 255 where the object or its shadow changes the pixel", "objects": {},
    }
    done = 0
    with _atomic_output(Path(output)) as folder:
        number = 0
        for split, count, num_views in (("train", num_train, views[0]), ("test", num_test, views[1])):
            for _ in range(count):
                name = f"obj_{number:05d}"
                number += 1
                scene = random_varied_object(rng)
                angles = _object_cameras(rng, split, num_views)
                c2ws = [look_at_opengl(spherical_eye(OBJECT_CAMERA_RADIUS, az, el), (0.0, 0.0, 0.0))
                        for az, el in angles]
                images, masks = render_object_views(scene, c2ws, size)
                write_srn_object(folder / split / name, c2ws, images, focal, centre, size, masks=masks)
                meta["objects"][name] = {"split": split, "scene": scene.to_dict(),
                                         "views": [{"azimuth": az, "elevation": el} for az, el in angles]}
                done += num_views
                if progress is not None:
                    progress(done, total)
        _write_json(meta, folder / "meta.json")
        _write_json(_capture_record("varied-objects", seed, image_size=size, num_train=num_train,
                                    num_test=num_test, views=list(views)), folder / "capture.json")
    return Path(output)


def read_object_masks(data: Union[str, Path], split: str, name: str, num_views: int) -> torch.Tensor:
    """The object masks of ``<data>/<split>/<name>/mask/`` as ``bool [V, 1, H, W]``.

    Raises:
        UserFacingError: when the folder has no masks (data written by another writer).
    """
    from ns_diffusion_methods.data.images import read_image

    folder = Path(data) / split / name / "mask"
    paths = [folder / f"{view:06d}.png" for view in range(num_views)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserFacingError(f"No object mask at {missing[0]}: the object masks are written by "
                              f"ns_diffusion_methods.synthetic.varied_objects.write_varied_objects. Regenerate the "
                              f"data with it.")
    masks = [torch.from_numpy(read_image(p, "L") > 127) for p in paths]
    return torch.stack(masks)[:, None]


__all__ = ["random_varied_object", "read_object_masks", "render_object_views", "write_varied_objects"]
