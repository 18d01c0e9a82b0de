"""A vectorised analytic ray tracer for :class:`~ns_diffusion_methods.synthetic.scene.Scene` (pure torch, CPU).

Every ray is intersected analytically with every surface (spheres, yaw-rotated boxes, vertical cylinders, the floor
plane or disc, the four wall quads); the nearest hit is shaded Lambertian with one directional light plus ambient, and
a secondary ray toward the light gives hard shadows (only primitives cast shadows). Computation is float64.

Cameras follow nerfstudio exactly, so a render here and a nerfstudio render of the same camera are pixel-aligned:

- ``c2w`` is OpenGL-style (camera looks down -z, +y up, +x right);
- pixel ``(row i, column j)`` has its centre at image coordinates ``(j + 0.5, i + 0.5)`` and its ray direction in the
  camera frame is ``((j + 0.5 - cx) / fx, -(i + 0.5 - cy) / fy, -1)`` (``Cameras.generate_rays``);
- with ``supersample = s``, a pixel averages ``s x s`` rays at ``(j + (a + 0.5) / s, i + (b + 0.5) / s)``, i.e. the
  pixel centres of an ``s``-times larger image; their mean position is the nerfstudio pixel centre.

Hit ids: ``>= 0`` a primitive's index in ``scene.primitives``, :data:`HIT_BACKGROUND` (-1) nothing,
:data:`HIT_FLOOR` (-2) the floor, :data:`HIT_WALL` (-3) a wall.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.synthetic.scene import Floor, Primitive, Scene, Texture, Walls

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

HIT_BACKGROUND = -1
HIT_FLOOR = -2
HIT_WALL = -3

_DTYPE = torch.float64
_T_MIN = 1e-9
"""Smallest accepted ray parameter (rays start exactly at their origin)."""
_SHADOW_OFFSET = 1e-6
"""Shadow rays start this far off the surface, along its normal, so they do not hit the surface they start on."""
_CHUNK = 1 << 14
"""Rays traced at once (bounds peak memory)."""


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch with one intra-op thread inside, restoring the setting after.

    The tracer's many small element-wise ops gain nothing from a second thread and lose badly when other processes
    compete for the cores (measured on 2 busy cores: 0.22 s with one thread, 2.6-3.4 s with two, per 48x36 image).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------------------------
# Textures


def _hash01(ix: Tensor, iy: Tensor, iz: Tensor, seed: int) -> Tensor:
    """A deterministic integer hash of lattice coordinates to [0, 1] (int64 arithmetic, no overflow)."""
    h = (ix * 73856093 + iy * 19349663 + iz * 83492791 + seed * 2654435761) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = ((h ^ (h >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFF).to(_DTYPE) / 65535.0


def _value_noise(points: Tensor, scale: float, seed: int) -> Tensor:
    """Trilinearly interpolated lattice value noise with smoothstep weights, in [0, 1]; ``points`` [N, 3] -> [N]."""
    q = points / scale
    cell = torch.floor(q)
    f = q - cell
    w = f * f * (3.0 - 2.0 * f)  # smoothstep
    i = cell.to(torch.int64)
    result = torch.zeros(points.shape[0], dtype=_DTYPE, device=points.device)
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                result = result + wx * wy * wz * _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return result


def texture_albedo(texture: Texture, points: Tensor) -> Tensor:
    """Albedo of a solid texture at world points: ``points`` [N, 3] -> [N, 3] in [0, 1]."""
    color = torch.tensor(texture.color, dtype=_DTYPE, device=points.device)
    if texture.kind in ("checker", "checker_noise"):
        color2 = torch.tensor(texture.color2, dtype=_DTYPE, device=points.device)
        cell = torch.floor(points / texture.period).to(torch.int64)
        parity = (cell[:, 0] + cell[:, 1] + cell[:, 2]) % 2
        albedo = torch.where(parity[:, None] == 0, color, color2)
    else:
        albedo = color.expand(points.shape[0], 3)
    if texture.kind in ("noise", "checker_noise"):
        # two octaves: the coarse one carries most of the contrast, the fine one adds detail that blur removes
        noise = 0.65 * _value_noise(points, texture.noise_scale, texture.seed)
        noise = noise + 0.35 * _value_noise(points, texture.noise_scale / 2.0, texture.seed + 7919)
        albedo = albedo * (1.0 + texture.noise_amplitude * (noise[:, None] - 0.5))
    return albedo.clamp(0.0, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# Intersections: each returns t [N] (inf where the ray misses) and outward normals [N, 3] (garbage where it misses)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise dot product of [N, 3] tensors (written out: much faster than a reduction over a size-3 axis)."""
    return a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1] + a[:, 2] * b[:, 2]


def _nearest_positive(t0: Tensor, t1: Tensor) -> Tensor:
    inf = torch.full_like(t0, math.inf)
    return torch.where(t0 > _T_MIN, t0, torch.where(t1 > _T_MIN, t1, inf))


def _intersect_sphere(prim: Primitive, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    center = torch.tensor(prim.center, dtype=_DTYPE, device=o.device)
    radius = prim.half_extents[0]
    oc = o - center
    b = _dot(oc, d)
    c = _dot(oc, oc) - radius * radius
    disc = b * b - c  # directions are unit vectors, so a = 1
    sq = torch.sqrt(disc.clamp(min=0.0))
    t = _nearest_positive(-b - sq, -b + sq)
    t = torch.where(disc >= 0, t, torch.full_like(t, math.inf))
    normal = (oc + t.nan_to_num(posinf=0.0)[:, None] * d) / radius
    return t, normal


def _yaw_matrix(yaw: float, device: torch.device) -> Tensor:
    """Rotation about +z by ``yaw`` (local -> world)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=_DTYPE, device=device)


def _intersect_box(prim: Primitive, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    rotation = _yaw_matrix(prim.yaw, o.device)  # local -> world
    center = torch.tensor(prim.center, dtype=_DTYPE, device=o.device)
    half = torch.tensor(prim.half_extents, dtype=_DTYPE, device=o.device)
    # world -> box frame: x_local = R^T (x - c); row vectors: x_local = (x - c) @ R
    o_local = (o - center) @ rotation
    d_local = d @ rotation
    d_safe = torch.where(d_local.abs() < 1e-15, torch.full_like(d_local, 1e-15), d_local)
    t_a = (-half - o_local) / d_safe
    t_b = (half - o_local) / d_safe
    t_near = torch.minimum(t_a, t_b)  # [N, 3] slab entries
    t_far = torch.maximum(t_a, t_b)
    t_enter, axis_enter = t_near.max(dim=-1)
    t_exit, axis_exit = t_far.min(dim=-1)
    hit = t_exit >= torch.clamp(t_enter, min=_T_MIN)
    inside = t_enter <= _T_MIN  # the ray starts inside the box: it hits the exit face
    t = torch.where(inside, t_exit, t_enter)
    t = torch.where(hit, t, torch.full_like(t, math.inf))
    axis = torch.where(inside, axis_exit, axis_enter)
    sign_d = torch.sign(d_safe.gather(-1, axis[:, None]))
    normal_local = torch.zeros_like(o_local)
    # entering through a face: the normal points against the ray; leaving (from inside): along it
    normal_local.scatter_(-1, axis[:, None], torch.where(inside[:, None], sign_d, -sign_d))
    return t, normal_local @ rotation.T


def _intersect_cylinder(prim: Primitive, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    cx, cy, cz = prim.center
    radius, _, half_height = prim.half_extents
    ox, oy, oz = o[:, 0] - cx, o[:, 1] - cy, o[:, 2] - cz
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    inf = torch.full_like(ox, math.inf)
    # side: (ox + t dx)^2 + (oy + t dy)^2 = r^2 with |oz + t dz| <= h
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - radius * radius
    disc = b * b - a * c
    a_safe = torch.where(a < 1e-15, torch.ones_like(a), a)
    sq = torch.sqrt(disc.clamp(min=0.0))
    side_ok = (disc >= 0) & (a >= 1e-15)
    candidates = []
    for t_side in ((-b - sq) / a_safe, (-b + sq) / a_safe):
        z = oz + t_side * dz
        ok = side_ok & (t_side > _T_MIN) & (z.abs() <= half_height)
        candidates.append(torch.where(ok, t_side, inf))
    # caps: z = ±h with x^2 + y^2 <= r^2
    dz_safe = torch.where(dz.abs() < 1e-15, torch.full_like(dz, 1e-15), dz)
    for cap_z in (half_height, -half_height):
        t_cap = (cap_z - oz) / dz_safe
        x, y = ox + t_cap * dx, oy + t_cap * dy
        ok = (t_cap > _T_MIN) & (x * x + y * y <= radius * radius) & (dz.abs() >= 1e-15)
        candidates.append(torch.where(ok, t_cap, inf))
    stacked = torch.stack(candidates, dim=-1)  # [N, 4]: side near, side far, top cap, bottom cap
    t, which = stacked.min(dim=-1)
    t_finite = t.nan_to_num(posinf=0.0)
    px, py = ox + t_finite * dx, oy + t_finite * dy
    side_normal = torch.stack([px / radius, py / radius, torch.zeros_like(px)], dim=-1)
    up = torch.zeros_like(side_normal)
    up[:, 2] = 1.0
    normal = torch.where((which == 2)[:, None], up, torch.where((which == 3)[:, None], -up, side_normal))
    return t, normal


_INTERSECTORS = {"sphere": _intersect_sphere, "box": _intersect_box, "cylinder": _intersect_cylinder}


def _intersect_primitive(prim: Primitive, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    """Exact intersection, run only on the rays that hit the primitive's bounding sphere (most rays miss it)."""
    center = torch.tensor(prim.center, dtype=_DTYPE, device=o.device)
    radius = prim.bounding_radius() * (1.0 + 1e-6) + 1e-9
    oc = o - center
    b = _dot(oc, d)
    disc = b * b - (_dot(oc, oc) - radius * radius)
    candidate = (disc >= 0) & (-b + torch.sqrt(disc.clamp(min=0.0)) > _T_MIN)
    t = torch.full_like(b, math.inf)
    normal = torch.zeros_like(o)
    if bool(candidate.any()):
        index = candidate.nonzero()[:, 0]
        t_sub, normal_sub = _INTERSECTORS[prim.kind](prim, o[index], d[index])
        t[index] = t_sub
        normal[index] = normal_sub
    return t, normal


def _intersect_floor(floor: Floor, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    dz = d[:, 2]
    dz_safe = torch.where(dz.abs() < 1e-15, torch.full_like(dz, 1e-15), dz)
    t = (floor.height - o[:, 2]) / dz_safe
    ok = (t > _T_MIN) & (dz.abs() >= 1e-15)
    if floor.radius is not None:
        x, y = o[:, 0] + t * d[:, 0], o[:, 1] + t * d[:, 1]
        ok = ok & (x * x + y * y <= floor.radius * floor.radius)
    t = torch.where(ok, t, torch.full_like(t, math.inf))
    normal = torch.zeros_like(o)
    normal[:, 2] = 1.0
    return t, normal


def _intersect_walls(walls: Walls, o: Tensor, d: Tensor) -> Tuple[Tensor, Tensor]:
    inf = torch.full_like(o[:, 0], math.inf)
    half = walls.half_size
    candidates, normals = [], []
    for axis in (0, 1):
        other = 1 - axis
        d_axis = d[:, axis]
        d_safe = torch.where(d_axis.abs() < 1e-15, torch.full_like(d_axis, 1e-15), d_axis)
        for sign in (1.0, -1.0):
            t = (sign * half[axis] - o[:, axis]) / d_safe
            along = o[:, other] + t * d[:, other]
            z = o[:, 2] + t * d[:, 2]
            ok = ((t > _T_MIN) & (d_axis.abs() >= 1e-15) & (along.abs() <= half[other])
                  & (z >= walls.bottom) & (z <= walls.bottom + walls.height))
            candidates.append(torch.where(ok, t, inf))
            normal = torch.zeros_like(o)
            normal[:, axis] = -sign  # facing the room's inside
            normals.append(normal)
    t, which = torch.stack(candidates, dim=-1).min(dim=-1)
    normal = torch.stack(normals, dim=1).gather(1, which[:, None, None].expand(-1, 1, 3))[:, 0]
    return t, normal


# --------------------------------------------------------------------------------------------------------------------
# Ray tracing


def _trace_chunk(scene: Scene, o: Tensor, d: Tensor, include_removable: bool) -> Dict[str, Tensor]:
    n_rays = o.shape[0]
    # surfaces: (hit id, texture, intersector); primitives keep their index as hit id
    surfaces = []
    for index, prim in enumerate(scene.primitives):
        if prim.removable and not include_removable:
            continue
        surfaces.append((index, prim.texture, lambda o_, d_, p=prim: _intersect_primitive(p, o_, d_)))
    if scene.floor is not None:
        surfaces.append((HIT_FLOOR, scene.floor.texture, lambda o_, d_: _intersect_floor(scene.floor, o_, d_)))
    if scene.walls is not None:
        surfaces.append((HIT_WALL, scene.walls.texture, lambda o_, d_: _intersect_walls(scene.walls, o_, d_)))

    background = torch.tensor(scene.background, dtype=_DTYPE, device=o.device)
    rgb = background.expand(n_rays, 3).clone()
    depth = torch.full((n_rays,), math.inf, dtype=_DTYPE, device=o.device)
    hit_id = torch.full((n_rays,), HIT_BACKGROUND, dtype=torch.int64, device=o.device)
    removable_shadow = torch.zeros(n_rays, dtype=torch.bool, device=o.device)
    if not surfaces:
        return {"rgb": rgb, "depth": depth, "hit_id": hit_id, "removable_shadow": removable_shadow}

    hits = [intersect(o, d) for _, _, intersect in surfaces]
    t_all = torch.stack([t for t, _ in hits], dim=-1)  # [N, S]
    t_best, which = t_all.min(dim=-1)
    hit = torch.isfinite(t_best)
    normals = torch.stack([n for _, n in hits], dim=1)  # [N, S, 3]
    normal = normals.gather(1, which[:, None, None].expand(-1, 1, 3))[:, 0]
    # two-sided surfaces (floor, walls; and any surface seen from inside): face the normal toward the viewer
    normal = torch.where((_dot(normal, d) > 0)[:, None], -normal, normal)
    points = o + t_best.nan_to_num(posinf=0.0)[:, None] * d
    ids = torch.tensor([surface_id for surface_id, _, _ in surfaces], dtype=torch.int64, device=o.device)
    hit_id = torch.where(hit, ids[which], hit_id)
    depth = t_best
    # snap hits on the floor and walls exactly onto their planes: a checker cell boundary lying in a plane (the floor
    # z = 0 with any period) must not flip with the rounding error of o + t d
    if scene.floor is not None:
        on_floor = hit_id == HIT_FLOOR
        points[on_floor, 2] = scene.floor.height
    if scene.walls is not None:
        on_wall = hit_id == HIT_WALL
        half_x, half_y = scene.walls.half_size
        x_wall = on_wall & ((points[:, 0].abs() - half_x).abs() <= (points[:, 1].abs() - half_y).abs())
        y_wall = on_wall & ~x_wall
        points[x_wall, 0] = torch.sign(points[x_wall, 0]) * half_x
        points[y_wall, 1] = torch.sign(points[y_wall, 1]) * half_y

    # albedo, evaluated per surface on the rays that hit it (the noise textures are the costly part)
    albedo = torch.zeros(n_rays, 3, dtype=_DTYPE, device=o.device)
    for slot, (_, texture, _) in enumerate(surfaces):
        select = hit & (which == slot)
        if select.any():
            albedo[select] = texture_albedo(texture, points[select])

    # Lambert + hard shadows: a secondary ray toward the light from every lit point
    light = torch.tensor(scene.light.direction, dtype=_DTYPE, device=o.device)
    cosine = _dot(normal, light.expand_as(normal)).clamp(min=0.0)
    lit = hit & (cosine > 0)
    shadowed = torch.zeros(n_rays, dtype=torch.bool, device=o.device)
    if lit.any():
        idx = lit.nonzero()[:, 0]
        s_origin = points[idx] + _SHADOW_OFFSET * normal[idx]
        s_dir = light.expand(idx.shape[0], 3)
        by_removable = torch.zeros(idx.shape[0], dtype=torch.bool, device=o.device)
        by_other = torch.zeros(idx.shape[0], dtype=torch.bool, device=o.device)
        for index, prim in enumerate(scene.primitives):
            if prim.removable and not include_removable:
                continue
            t_shadow, _ = _intersect_primitive(prim, s_origin, s_dir)
            # a convex primitive never shadows its own lit side, so skip self-tests (avoids acne at edges)
            blocked = torch.isfinite(t_shadow) & (hit_id[idx] != index)
            if prim.removable:
                by_removable |= blocked
            else:
                by_other |= blocked
        shadowed[idx] = by_removable | by_other
        # the removable object's own shadow: lit without it, shadowed with it
        removable_shadow[idx] = by_removable & ~by_other
    shading = scene.light.ambient + scene.light.intensity * cosine * (~shadowed).to(_DTYPE)
    rgb = torch.where(hit[:, None], (albedo * shading[:, None]).clamp(0.0, 1.0), rgb)
    return {"rgb": rgb, "depth": depth, "hit_id": hit_id, "removable_shadow": removable_shadow}


def render_rays(
    scene: Scene,
    origins: Tensor,  # [N, 3]
    directions: Tensor,  # [N, 3]
    include_removable: bool = True,
) -> Dict[str, Tensor]:
    """Trace rays through ``scene``.

    Args:
        scene: the scene.
        origins: ray origins in world coordinates, [N, 3].
        directions: ray directions, [N, 3] (normalised here).
        include_removable: render the removable primitive (and its shadow). Default is True.

    Returns:
        A dict of float64/int64/bool CPU tensors:

        - ``rgb`` [N, 3] in [0, 1];
        - ``depth`` [N]: distance along the (unit) ray to the hit, ``inf`` for background;
        - ``hit_id`` [N]: primitive index, or :data:`HIT_BACKGROUND` / :data:`HIT_FLOOR` / :data:`HIT_WALL`;
        - ``removable_hit`` [N] bool: the ray's first hit is the removable primitive;
        - ``removable_shadow`` [N] bool: the ray's first hit is lit without the removable primitive and shadowed by
          it (always False when ``include_removable`` is False).

    .. note::
        A ray's colour changes when the removable primitive is removed only if ``removable_hit`` or
        ``removable_shadow`` is True: this is the definition of the object masks in the captures.
    """
    origins = torch.as_tensor(origins).to(dtype=_DTYPE, device="cpu")
    directions = torch.as_tensor(directions).to(dtype=_DTYPE, device="cpu")
    assert origins.ndim == 2 and origins.shape[1] == 3, origins.shape
    assert directions.shape == origins.shape, (directions.shape, origins.shape)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    with single_threaded():
        chunks = [
            _trace_chunk(scene, origins[start:start + _CHUNK], directions[start:start + _CHUNK], include_removable)
            for start in range(0, max(origins.shape[0], 1), _CHUNK)
        ]
    out = {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
    removable = scene.removable_index
    out["removable_hit"] = (out["hit_id"] == removable) if (removable is not None and include_removable) else (
        torch.zeros_like(out["hit_id"], dtype=torch.bool))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Cameras


def _as_c2w(c2w: Union[Tensor, "object"]) -> Tensor:
    matrix = torch.as_tensor(c2w).to(dtype=_DTYPE, device="cpu")
    assert matrix.shape in ((3, 4), (4, 4)), f"`c2w` must be [3, 4] or [4, 4], but got {tuple(matrix.shape)}"
    return matrix[:3, :4]


def camera_rays(
    c2w: Tensor,  # [3, 4] or [4, 4], OpenGL convention
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    supersample: int = 1,
) -> Tuple[Tensor, Tensor]:
    """Rays of a pinhole camera, nerfstudio's convention, with ``supersample²`` rays per pixel.

    Returns:
        ``origins`` and unit ``directions``, each [height * s, width * s, 3] (the pixel centres of an s-times larger
        image: subsample ``(a, b)`` of pixel ``(i, j)`` is at ``[i * s + b, j * s + a]``).
    """
    matrix = _as_c2w(c2w)
    s = int(supersample)
    cols = (torch.arange(width * s, dtype=_DTYPE) + 0.5) / s  # image x of each subsample
    rows = (torch.arange(height * s, dtype=_DTYPE) + 0.5) / s
    y, x = torch.meshgrid(rows, cols, indexing="ij")
    # OpenCV pixel coordinates -> OpenGL camera directions (y flipped, looking down -z)
    dirs_cam = torch.stack([(x - cx) / fx, -(y - cy) / fy, -torch.ones_like(x)], dim=-1)
    directions = dirs_cam @ matrix[:, :3].T
    directions = directions / directions.norm(dim=-1, keepdim=True)
    origins = matrix[:, 3].expand_as(directions)
    return origins, directions


def render_camera_subsamples(
    scene: Scene,
    c2w: Tensor,  # [3, 4] or [4, 4], OpenGL convention
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    include_removable: bool = True,
    supersample: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Render every subsample ray of a camera, unreduced: the same rays :func:`render_camera` averages.

    Returns:
        :func:`render_rays`' outputs reshaped to [height * s, width * s, ...] (a 1-ray-per-pixel image ``s`` times
        larger, whose intrinsics are ``s * fx, s * fy, s * cx, s * cy``), plus ``directions``
        [height * s, width * s, 3].
    """
    s = scene.supersample if supersample is None else int(supersample)
    with single_threaded():
        origins, directions = camera_rays(c2w, fx, fy, cx, cy, width, height, supersample=s)
        out = render_rays(scene, origins.reshape(-1, 3), directions.reshape(-1, 3), include_removable)
    grid = {key: value.reshape(height * s, width * s, *value.shape[1:]) for key, value in out.items()}
    grid["directions"] = directions
    return grid


def render_camera(
    scene: Scene,
    c2w: Tensor,  # [3, 4] or [4, 4], OpenGL convention
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    include_removable: bool = True,
    supersample: Optional[int] = None,
) -> Dict[str, Tensor]:
    """Render one pinhole camera (OpenGL c2w, nerfstudio pixel centres).

    Args:
        scene: the scene.
        c2w: camera-to-world, OpenGL convention, [3, 4] or [4, 4], in the scene's world frame.
        fx, fy, cx, cy: intrinsics in pixels.
        width, height: image size in pixels.
        include_removable: render the removable primitive. Default is True.
        supersample: subsamples per pixel side; None uses ``scene.supersample`` (the capture's setting).

    Returns:
        A dict of CPU tensors: ``rgb`` [H, W, 3] float32 in [0, 1] (mean over the subsamples);
        ``removable_mask`` [H, W] bool (any subsample has ``removable_hit`` or ``removable_shadow``, i.e. the
        pixel changes when the removable object is removed); ``depth`` [H, W] float32 (distance along the ray
        through the pixel centre, ``inf`` for background) and ``hit_id`` [H, W] int64 (at the pixel centre).
    """
    s = scene.supersample if supersample is None else int(supersample)
    with single_threaded():
        grid = render_camera_subsamples(scene, c2w, fx, fy, cx, cy, width, height, include_removable, s)
        rgb, removable_mask = reduce_subsamples(grid, s)
        if s % 2 == 1:  # the middle subsample is the pixel centre
            depth = grid["depth"][s // 2::s, s // 2::s]
            hit_id = grid["hit_id"][s // 2::s, s // 2::s]
        else:
            centre = render_camera_subsamples(scene, c2w, fx, fy, cx, cy, width, height, include_removable, 1)
            depth, hit_id = centre["depth"], centre["hit_id"]
    return {"rgb": rgb, "removable_mask": removable_mask, "depth": depth.float(), "hit_id": hit_id}


def reduce_subsamples(grid: Dict[str, Tensor], supersample: int) -> Tuple[Tensor, Tensor]:
    """Pixels from a subsample grid: ``rgb`` [H, W, 3] float32 (mean) and ``removable_mask`` [H, W] bool (any)."""
    s = int(supersample)
    rows, cols = grid["rgb"].shape[:2]
    height, width = rows // s, cols // s
    # [H*s, W*s, C] -> [H, s, W, s, C] -> reduce over the two subsample axes
    rgb = grid["rgb"].reshape(height, s, width, s, 3).mean(dim=(1, 3))
    changed = (grid["removable_hit"] | grid["removable_shadow"]).reshape(height, s, width, s)
    return rgb.float(), changed.any(dim=3).any(dim=1)


def to_image_uint8(rgb: Tensor) -> Tensor:
    """[..., 3] float in [0, 1] -> uint8, rounding to nearest (how every capture image is quantised)."""
    return (rgb.clamp(0.0, 1.0) * 255.0 + 0.5).floor().to(torch.uint8)


# --------------------------------------------------------------------------------------------------------------------
# nerfstudio cameras and dataparser transforms


def load_dataparser_transform(path: Union[str, Path]) -> Tuple[Tensor, float]:
    """Read nerfstudio's ``dataparser_transforms.json``.

    Args:
        path: the json file, a run folder that holds it (``outputs/<name>/<method>/<timestamp>``), or the run's
            ``config.yml``.

    Returns:
        ``(transform [3, 4] float64, scale)``: nerfstudio maps a capture-frame pose ``P`` to
        ``scale * (transform @ P)`` (translation scaled).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataparser_transforms.json"
    elif path.suffix in (".yml", ".yaml"):
        path = path.parent / "dataparser_transforms.json"
    if not path.is_file():
        raise DataError(f"No dataparser transform at {path}. nerfstudio writes `dataparser_transforms.json` into "
                        f"the run folder when training starts; pass that run folder (or the file).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        transform = torch.tensor(data["transform"], dtype=_DTYPE)
        scale = float(data["scale"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is not a nerfstudio dataparser transform ({error}); it needs `transform` (3x4) "
                        f"and `scale`.") from error
    if transform.shape != (3, 4) or not scale > 0:
        raise DataError(f"{path}: `transform` must be 3x4 and `scale` > 0, but got {tuple(transform.shape)} and "
                        f"{scale}.")
    return transform, scale


def poses_to_capture_frame(
    c2w: Tensor,  # [B, 3, 4] or [B, 4, 4], OpenGL, dataparser space
    dataparser_transform: Tensor,  # [3, 4]
    dataparser_scale: float,
) -> Tensor:
    """Undo nerfstudio's dataparser normalisation: ``[B, 3|4, 4]`` dataparser-space c2w -> capture-frame ``[B, 3, 4]``.

    nerfstudio stores ``scale * (T @ P)`` (rotation of ``T @ P`` unscaled); this returns ``P = T^-1 @ (c2w with the
    translation divided by scale)``. The camera convention (OpenGL) is unchanged.
    """
    poses = torch.as_tensor(c2w).to(_DTYPE)[..., :3, :4].clone()
    transform = torch.as_tensor(dataparser_transform).to(_DTYPE)
    assert transform.shape == (3, 4), transform.shape
    poses[..., :3, 3] = poses[..., :3, 3] / float(dataparser_scale)
    rotation, translation = transform[:, :3], transform[:, 3]
    # inverse of [R | t]: [R^T | -R^T t]
    world_rot = rotation.T @ poses[..., :3, :3]
    world_t = (poses[..., :3, 3] - translation) @ rotation  # (x - t) @ R == R^T (x - t) for row vectors
    return torch.cat([world_rot, world_t[..., None]], dim=-1)


def render_nerfstudio_cameras(
    scene: Scene,
    cameras: "Cameras",
    dataparser_transform: Optional[Tensor] = None,
    dataparser_scale: Optional[float] = None,
    include_removable: bool = True,
    supersample: Optional[int] = None,
) -> Tensor:
    """Render nerfstudio cameras, pixel-aligned with nerfstudio's own renders of them.

    Args:
        scene: the scene of the capture.
        cameras: nerfstudio ``Cameras`` (perspective, undistorted), flattened to [B]; all of one size.
        dataparser_transform: [3, 4]; when the cameras are in dataparser-normalised space (a dataparser's output or a
            trained model's cameras), pass the run's transform and scale (:func:`load_dataparser_transform`, or
            ``DataparserOutputs.dataparser_transform`` / ``dataparser_scale``). None means the cameras are already in
            the capture's world frame.
        dataparser_scale: the matching scale (required with ``dataparser_transform``).
        include_removable: render the removable object. Default is True.
        supersample: subsamples per pixel side; None uses the capture's (``scene.supersample``).

    Returns:
        Images [B, H, W, 3], float32 in [0, 1].
    """
    from nerfstudio.cameras.cameras import CameraType

    if (dataparser_transform is None) != (dataparser_scale is None):
        raise ValueError("Pass both `dataparser_transform` and `dataparser_scale`, or neither.")
    cameras = cameras.flatten() if cameras.ndim > 1 else (cameras.reshape((1,)) if cameras.ndim == 0 else cameras)
    if not bool((cameras.camera_type == CameraType.PERSPECTIVE.value).all()):
        raise ValueError("Only perspective cameras can be rendered; got camera types "
                         f"{sorted(set(cameras.camera_type.view(-1).tolist()))}.")
    if cameras.distortion_params is not None and bool((cameras.distortion_params != 0).any()):
        raise ValueError("Cameras with lens distortion cannot be rendered; synthetic captures have none.")
    heights = set(cameras.height.view(-1).tolist())
    widths = set(cameras.width.view(-1).tolist())
    if len(heights) != 1 or len(widths) != 1:
        raise ValueError(f"All cameras must have one size to stack the images, but got heights {sorted(heights)} "
                         f"and widths {sorted(widths)}; render them one at a time.")
    c2w = cameras.camera_to_worlds.detach().cpu().to(_DTYPE)
    if dataparser_transform is not None:
        c2w = poses_to_capture_frame(c2w, dataparser_transform, float(dataparser_scale))
    height, width = int(heights.pop()), int(widths.pop())
    images = []
    for index in range(c2w.shape[0]):
        out = render_camera(
            scene, c2w[index], float(cameras.fx[index]), float(cameras.fy[index]), float(cameras.cx[index]),
            float(cameras.cy[index]), width, height, include_removable=include_removable, supersample=supersample)
        images.append(out["rgb"])
    return torch.stack(images)
