"""``write_varied_objects``: deterministic, varied objects, and masks that are exactly the pixels the object changes."""

from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

from ns_diffusion_methods.synthetic.captures import OBJECT_FOCAL_RATIO, _object_rays
from ns_diffusion_methods.synthetic.render import render_rays, to_image_uint8
from ns_diffusion_methods.synthetic.scene import Scene
from ns_diffusion_methods.synthetic.varied_objects import (
    random_varied_object,
    read_object_masks,
    write_varied_objects,
)


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    return write_varied_objects(tmp_path_factory.mktemp("varied") / "data", seed=3, image_size=16, num_train=2,
                                num_test=1, views=(2, 3))


def _opengl(pose_file):
    c2w = np.loadtxt(pose_file).reshape(4, 4)
    c2w[:3, 1:3] *= -1  # OpenCV -> OpenGL
    return c2w


def test_masks_are_exactly_the_pixels_the_object_and_its_shadow_change(varied):
    from PIL import Image

    meta = json.loads((varied / "meta.json").read_text())
    name = "obj_00002"
    assert meta["objects"][name]["split"] == "test"
    scene = Scene.from_dict(meta["objects"][name]["scene"])
    masks = read_object_masks(varied, "test", name, 3)[:, 0].numpy()
    assert masks.shape == (3, 16, 16) and masks.any(axis=(1, 2)).all() and not masks.all()
    s = scene.supersample
    for view in range(3):
        c2w = _opengl(varied / "test" / name / "pose" / f"{view:06d}.txt")
        origins, directions = _object_rays(c2w, OBJECT_FOCAL_RATIO * 16, 8.0, 16, s)
        empty = render_rays(scene, origins, directions, include_removable=False)["rgb"]
        empty = to_image_uint8(empty.reshape(16, s, 16, s, 3).mean(dim=(1, 3))).numpy()
        image = np.asarray(Image.open(varied / "test" / name / "rgb" / f"{view:06d}.png").convert("RGB"))
        outside = ~masks[view]
        np.testing.assert_array_equal(image[outside], empty[outside])  # background pixels: as without the object
        changed = np.abs(image.astype(int) - empty.astype(int)).max(axis=-1) > 2
        assert changed[masks[view]].mean() > 0.7  # almost every masked pixel visibly differs (edges may not)


def test_same_seed_same_files_and_the_srn_dataparser_reads_it_in_box_units(varied, tmp_path):
    again = write_varied_objects(tmp_path / "again", seed=3, image_size=16, num_train=2, num_test=1, views=(2, 3))
    for path in sorted(varied.rglob("*.png")):
        assert path.read_bytes() == (again / path.relative_to(varied)).read_bytes(), path
    from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig

    parser = SRNDataParserConfig(data=varied).setup()
    assert parser.radius() == 1.0
    outputs = parser.get_dataparser_outputs(split="test")
    assert len(outputs.image_filenames) == 3


def test_objects_vary_in_shape_colour_size_and_placement():
    rng = np.random.default_rng(0)
    scenes = [random_varied_object(rng) for _ in range(60)]
    prims = [s.primitives[0] for s in scenes]
    assert {p.kind for p in prims} == {"sphere", "box", "cylinder"}
    hues = [colorsys.rgb_to_hsv(*p.texture.color)[0] for p in prims]
    assert np.histogram(hues, bins=6, range=(0, 1))[0].min() >= 3  # every sixth of the hue circle
    heights = [p.half_extents[2] for p in prims]
    assert max(heights) - min(heights) > 0.25
    xy = np.array([p.center[:2] for p in prims])
    assert xy.std(axis=0).min() > 0.08
    for p in prims:  # inside the floor disc and the [-1, 1]^3 box, standing on the floor
        assert np.hypot(*p.center[:2]) + p.footprint_radius() <= 0.97 + 1e-9
        assert p.center[2] - p.half_extents[2] == pytest.approx(-0.35)
        assert p.center[2] + p.half_extents[2] < 1.0
    assert all(p.removable for p in prims)
