"""A JSON-serialisable description of a synthetic scene: primitives, a textured room, one light.

The world frame is right-handed with **+z up**; lengths are in arbitrary world units. A scene holds

- primitives (sphere, yaw-rotated box, vertical cylinder), each with a solid procedural texture and a ``removable``
  flag (the object an inpainting method must remove);
- an optional floor plane (``z = floor.height``, optionally a disc) and optional room walls (four vertical quads);
- one directional light plus ambient light (Lambertian shading, hard shadows cast by the primitives);
- a background colour for rays that miss everything;
- ``supersample``: the subsamples per pixel side that captures of this scene were rendered with, so any later render
  reproduces the capture's anti-aliasing exactly.

:meth:`Scene.to_json` / :meth:`Scene.from_json` round-trip it through ``scene.json``. Rendering lives in
:mod:`ns_diffusion_methods.synthetic.render`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from ns_diffusion_methods.errors import DataError

#: version of the ``scene.json`` format; bump when a field changes meaning
SCENE_FORMAT_VERSION = 1

Vec3 = Tuple[float, float, float]
TextureKind = Literal["flat", "checker", "noise", "checker_noise"]
PrimitiveKind = Literal["sphere", "box", "cylinder"]
TEXTURE_KINDS: Tuple[str, ...] = ("flat", "checker", "noise", "checker_noise")
PRIMITIVE_KINDS: Tuple[str, ...] = ("sphere", "box", "cylinder")


def _vec3(value: Any, name: str) -> Vec3:
    values = tuple(float(v) for v in value)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"`{name}` must be 3 finite numbers, but got {value!r}.")
    return values  # type: ignore[return-value]


@dataclass
class Texture:
    """A solid (3D) procedural texture, evaluated at world points, so every surface is textured without UVs.

    - ``flat``: ``color`` everywhere;
    - ``checker``: a 3D checkerboard of cell size ``period`` alternating ``color`` and ``color2``;
    - ``noise``: ``color`` modulated by two octaves of value noise (lattice spacing ``noise_scale``);
    - ``checker_noise``: the checkerboard modulated by the noise.

    The noise multiplies the colour by ``1 + noise_amplitude * (n - 0.5)`` with ``n`` in [0, 1].
    """

    kind: TextureKind = "flat"
    """Texture type: flat, checker, noise or checker_noise."""
    color: Vec3 = (0.8, 0.8, 0.8)
    """Base colour, RGB in [0, 1]."""
    color2: Vec3 = (0.2, 0.2, 0.2)
    """Second checker colour, RGB in [0, 1] (checker kinds only)."""
    period: float = 0.5
    """Checker cell size in world units."""
    noise_scale: float = 0.2
    """Lattice spacing of the value noise's first octave, in world units."""
    noise_amplitude: float = 0.0
    """Relative brightness modulation of the noise, in [0, 2)."""
    seed: int = 0
    """Seed of the noise lattice (part of the integer hash)."""

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"`kind` must be one of {TEXTURE_KINDS}, but got {self.kind!r}.")
        self.color = _vec3(self.color, "color")
        self.color2 = _vec3(self.color2, "color2")
        if self.period <= 0 or self.noise_scale <= 0:
            raise ValueError(f"`period` and `noise_scale` must be > 0, but got {self.period} and {self.noise_scale}.")
        if not 0.0 <= self.noise_amplitude < 2.0:
            raise ValueError(f"`noise_amplitude` must be in [0, 2), but got {self.noise_amplitude}.")
        self.seed = int(self.seed)


@dataclass
class Primitive:
    """A solid object.

    ``half_extents`` gives the size for every kind:

    - ``sphere``: radius = ``half_extents[0]`` (all three must be equal);
    - ``box``: half extents along the box's own axes, the box rotated by ``yaw`` radians about +z;
    - ``cylinder``: vertical axis, radius = ``half_extents[0]`` (= ``half_extents[1]``),
      half height = ``half_extents[2]``.
    """

    kind: PrimitiveKind
    """sphere, box or cylinder."""
    center: Vec3
    """Centre in world coordinates."""
    half_extents: Vec3
    """Half sizes (see the class docstring)."""
    yaw: float = 0.0
    """Rotation about +z in radians (boxes only; must be 0 for spheres and cylinders)."""
    texture: Texture = field(default_factory=Texture)
    """Surface texture."""
    removable: bool = False
    """Whether this is the object an object-removal method must remove."""
    name: str = ""
    """A readable name (e.g. ``removable-box``)."""

    def __post_init__(self) -> None:
        if self.kind not in PRIMITIVE_KINDS:
            raise ValueError(f"`kind` must be one of {PRIMITIVE_KINDS}, but got {self.kind!r}.")
        self.center = _vec3(self.center, "center")
        self.half_extents = _vec3(self.half_extents, "half_extents")
        if isinstance(self.texture, dict):
            self.texture = Texture(**self.texture)
        if min(self.half_extents) <= 0:
            raise ValueError(f"`half_extents` must be > 0, but got {self.half_extents}.")
        hx, hy, hz = self.half_extents
        if self.kind == "sphere" and not (hx == hy == hz):
            raise ValueError(f"A sphere needs equal half extents (its radius), but got {self.half_extents}.")
        if self.kind == "cylinder" and hx != hy:
            raise ValueError(f"A cylinder needs half_extents[0] == half_extents[1] (its radius), but got "
                             f"{self.half_extents}.")
        if self.kind != "box" and self.yaw != 0.0:
            raise ValueError(f"Only boxes have a yaw; a {self.kind} got yaw={self.yaw}.")
        self.yaw = float(self.yaw)
        self.removable = bool(self.removable)

    def top_center(self) -> Vec3:
        """The highest point on the primitive's axis: the centre of a box's or cylinder's top face, a sphere's pole."""
        cx, cy, cz = self.center
        return (cx, cy, cz + self.half_extents[2])

    def bounding_radius(self) -> float:
        """Radius of a sphere around ``center`` that contains the primitive."""
        hx, hy, hz = self.half_extents
        if self.kind == "sphere":
            return hx
        if self.kind == "cylinder":
            return math.hypot(hx, hz)
        return math.sqrt(hx * hx + hy * hy + hz * hz)

    def footprint_radius(self) -> float:
        """Radius of a vertical cylinder around ``center`` that contains the primitive."""
        hx, hy, _ = self.half_extents
        return math.hypot(hx, hy) if self.kind == "box" else hx


@dataclass
class Floor:
    """The plane ``z = height`` (two-sided), infinite or a disc of ``radius`` around the z axis."""

    height: float = 0.0
    """z of the floor plane."""
    radius: Optional[float] = None
    """Radius of a floor disc centred on the z axis; None for an unbounded plane."""
    texture: Texture = field(default_factory=Texture)
    """Floor texture."""

    def __post_init__(self) -> None:
        if isinstance(self.texture, dict):
            self.texture = Texture(**self.texture)
        if self.radius is not None and self.radius <= 0:
            raise ValueError(f"`radius` must be > 0 or None, but got {self.radius}.")


@dataclass
class Walls:
    """Four vertical wall quads around the z axis: ``x = ±half_size[0]``, ``y = ±half_size[1]``, from the floor
    height ``bottom`` up to ``bottom + height``. Two-sided; they receive shadows but cast none."""

    half_size: Tuple[float, float] = (3.0, 3.0)
    """Half sizes of the room along x and y."""
    bottom: float = 0.0
    """z of the walls' lower edge."""
    height: float = 3.0
    """Height of the walls."""
    texture: Texture = field(default_factory=Texture)
    """Wall texture."""

    def __post_init__(self) -> None:
        if isinstance(self.texture, dict):
            self.texture = Texture(**self.texture)
        self.half_size = (float(self.half_size[0]), float(self.half_size[1]))
        if min(self.half_size) <= 0 or self.height <= 0:
            raise ValueError(f"`half_size` and `height` must be > 0, but got {self.half_size} and {self.height}.")


@dataclass
class Light:
    """One directional light plus ambient light: ``albedo * (ambient + intensity * max(n·l, 0) * lit)``."""

    direction: Vec3 = (0.35, -0.25, 0.9)
    """Direction *toward* the light (normalised on load)."""
    intensity: float = 0.75
    """Directional light intensity."""
    ambient: float = 0.3
    """Ambient light intensity."""

    def __post_init__(self) -> None:
        x, y, z = _vec3(self.direction, "direction")
        norm = math.sqrt(x * x + y * y + z * z)
        if norm == 0:
            raise ValueError("`direction` must be non-zero.")
        self.direction = (x / norm, y / norm, z / norm)


@dataclass
class Scene:
    """A whole scene (see the module docstring). ``primitives`` may hold at most one removable primitive."""

    primitives: List[Primitive] = field(default_factory=list)
    """The objects."""
    floor: Optional[Floor] = None
    """The floor, or None."""
    walls: Optional[Walls] = None
    """The room walls, or None."""
    light: Light = field(default_factory=Light)
    """Lighting."""
    background: Vec3 = (1.0, 1.0, 1.0)
    """Colour of rays that hit nothing, RGB in [0, 1]."""
    supersample: int = 1
    """Subsamples per pixel side used by captures of this scene (supersample² rays per pixel)."""
    version: int = SCENE_FORMAT_VERSION
    """``scene.json`` format version."""

    def __post_init__(self) -> None:
        self.primitives = [Primitive(**p) if isinstance(p, dict) else p for p in self.primitives]
        if isinstance(self.floor, dict):
            self.floor = Floor(**self.floor)
        if isinstance(self.walls, dict):
            self.walls = Walls(**self.walls)
        if isinstance(self.light, dict):
            self.light = Light(**self.light)
        self.background = _vec3(self.background, "background")
        if sum(p.removable for p in self.primitives) > 1:
            raise ValueError("A scene may hold at most one removable primitive.")
        if self.supersample < 1:
            raise ValueError(f"`supersample` must be >= 1, but got {self.supersample}.")

    @property
    def removable_index(self) -> Optional[int]:
        """Index of the removable primitive in ``primitives``, or None."""
        for index, primitive in enumerate(self.primitives):
            if primitive.removable:
                return index
        return None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Scene":
        version = data.get("version", SCENE_FORMAT_VERSION)
        if version != SCENE_FORMAT_VERSION:
            raise DataError(f"Scene format version {version} is not supported (this package reads version "
                            f"{SCENE_FORMAT_VERSION}). Regenerate the capture with `ns-diffusion-synth`.")
        return cls(**data)

    def to_json(self, path: Union[str, Path]) -> Path:
        """Write the scene to ``path`` (usually ``<capture>/scene.json``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: Union[str, Path]) -> "Scene":
        """Read a scene written by :meth:`to_json`. A folder means ``<folder>/scene.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / "scene.json"
        if not path.is_file():
            raise DataError(f"No scene description at {path}. Point at a capture written by `ns-diffusion-synth` "
                            f"(object-removal or sparse-views), which saves `scene.json` next to `transforms.json`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            if isinstance(error, DataError):
                raise
            raise DataError(f"{path} is not a valid scene description ({error}). Regenerate the capture with "
                            f"`ns-diffusion-synth`.") from error
