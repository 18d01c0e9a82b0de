"""Synthetic captures and an analytic renderer of their scenes (``ns-diffusion-synth``).

- :mod:`.scene`: the JSON-serialisable scene description (``scene.json``);
- :mod:`.render`: a vectorised analytic ray tracer, nerfstudio-aligned camera rendering and the inverse of
  nerfstudio's dataparser normalisation, so benchmarks can score a method against ground truth at any pose;
- :mod:`.captures`: the ``object-removal``, ``sparse-views`` and ``objects`` writers;
- :mod:`.cli`: the ``ns-diffusion-synth`` command.

This package never imports nerfstudio at module level.
"""

from ns_diffusion_methods.synthetic.captures import (
    GENERATOR_VERSION,
    look_at_opengl,
    opengl_to_opencv,
    write_object_removal,
    write_objects,
    write_sparse_views,
)
from ns_diffusion_methods.synthetic.render import (
    HIT_BACKGROUND,
    HIT_FLOOR,
    HIT_WALL,
    load_dataparser_transform,
    poses_to_capture_frame,
    render_camera,
    render_nerfstudio_cameras,
    render_rays,
)
from ns_diffusion_methods.synthetic.scene import Floor, Light, Primitive, Scene, Texture, Walls

__all__ = [
    "GENERATOR_VERSION",
    "HIT_BACKGROUND",
    "HIT_FLOOR",
    "HIT_WALL",
    "Floor",
    "Light",
    "Primitive",
    "Scene",
    "Texture",
    "Walls",
    "load_dataparser_transform",
    "look_at_opengl",
    "opengl_to_opencv",
    "poses_to_capture_frame",
    "render_camera",
    "render_nerfstudio_cameras",
    "render_rays",
    "write_object_removal",
    "write_objects",
    "write_sparse_views",
]
