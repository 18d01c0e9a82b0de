"""The analytic renderer: hand-computed hits and shading, nerfstudio pixel alignment, dataparser-transform inversion."""

from __future__ import annotations

import math

import pytest
import torch

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.synthetic import (
    HIT_BACKGROUND,
    HIT_FLOOR,
    HIT_WALL,
    Floor,
    Light,
    Primitive,
    Scene,
    Texture,
    Walls,
    load_dataparser_transform,
    look_at_opengl,
    poses_to_capture_frame,
    render_camera,
    render_nerfstudio_cameras,
    render_rays,
)
from ns_diffusion_methods.synthetic.render import camera_rays, texture_albedo

RED = (0.8, 0.2, 0.1)
LIGHT_UP = Light((0.0, 0.0, 1.0), intensity=0.6, ambient=0.25)


def _rays(*pairs):
    origins = torch.tensor([o for o, _ in pairs], dtype=torch.float64)
    directions = torch.tensor([d for _, d in pairs], dtype=torch.float64)
    return origins, directions


def test_sphere_hit_depth_and_lambert_shading_by_hand():
    light = Light((0.0, 0.6, 0.8), intensity=0.5, ambient=0.2)
    scene = Scene([Primitive("sphere", (0, 0, 0), (1, 1, 1), texture=Texture("flat", RED))], light=light,
                  background=(0.1, 0.2, 0.3))
    origins, directions = _rays(((0, 0, 5), (0, 0, -1)), ((0, 3, 0), (0, -1, 0)), ((5, 5, 5), (0, 0, 1)))
    out = render_rays(scene, origins, directions)
    # top pole: normal (0, 0, 1), n.l = 0.8; side at y = 1: normal (0, 1, 0), n.l = 0.6
    assert out["depth"][:2].tolist() == pytest.approx([4.0, 2.0])
    assert out["hit_id"].tolist() == [0, 0, HIT_BACKGROUND]
    assert out["rgb"][0].tolist() == pytest.approx([c * (0.2 + 0.5 * 0.8) for c in RED])
    assert out["rgb"][1].tolist() == pytest.approx([c * (0.2 + 0.5 * 0.6) for c in RED])
    assert out["rgb"][2].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert math.isinf(out["depth"][2])


def test_yawed_box_and_cylinder_hits_by_hand():
    box = Primitive("box", (0, 0, 0), (1, 1, 1), yaw=math.pi / 4, texture=Texture("flat", RED))
    cylinder = Primitive("cylinder", (10, 0, 0), (0.5, 0.5, 2.0), texture=Texture("flat", RED))
    scene = Scene([box, cylinder], light=LIGHT_UP)
    origins, directions = _rays(
        ((5, 0, 0), (-1, 0, 0)),  # hits the box's vertical edge at x = sqrt(2)
        ((0, 0, 5), (0, 0, -1)),  # hits the box's top face at z = 1
        ((10, 5, 0), (0, -1, 0)),  # hits the cylinder's side at y = 0.5
        ((10.3, 0, 9), (0, 0, -1)),  # hits the cylinder's top cap at z = 2
        ((10.7, 0, 9), (0, 0, -1)),  # misses the cylinder (outside its radius)
    )
    out = render_rays(scene, origins, directions)
    assert out["depth"][:4].tolist() == pytest.approx([5 - math.sqrt(2), 4.0, 4.5, 7.0])
    assert out["hit_id"].tolist() == [0, 0, 1, 1, HIT_BACKGROUND]
    # the cylinder's side has a horizontal normal (only ambient light from +z); its cap faces the light
    assert out["rgb"][2].tolist() == pytest.approx([c * 0.25 for c in RED])
    assert out["rgb"][3].tolist() == pytest.approx([c * 0.85 for c in RED])


def test_floor_walls_and_hard_shadow_of_the_removable_object():
    floor_colour = (0.5, 0.6, 0.7)
    scene = Scene(
        [Primitive("sphere", (0, 0, 2), (0.5, 0.5, 0.5), removable=True),
         Primitive("box", (3, 0, 2), (0.5, 0.5, 0.5)),
         Primitive("box", (-3, 0, 2), (0.5, 0.5, 0.5)),
         Primitive("sphere", (-3, 0, 4), (0.5, 0.5, 0.5), removable=False)],
        floor=Floor(0.0, None, Texture("flat", floor_colour)),
        walls=Walls((6, 6), 0.0, 3.0, Texture("flat", (0.9, 0.9, 0.9))), light=LIGHT_UP)
    # floor points under the removable sphere, under a plain box, under two stacked occluders, in the open
    origins, directions = _rays(((0.2, 0, 5), (0, 0, -1)), ((3.2, 0, 1), (0, 0, -1)),
                                ((-3.1, 0, 1), (0, 0, -1)), ((1.5, 1.5, 5), (0, 0, -1)), ((0, 0, 1), (1, 0, 0)))
    out = render_rays(scene, origins, directions)
    assert out["hit_id"].tolist() == [0, HIT_FLOOR, HIT_FLOOR, HIT_FLOOR, HIT_WALL]
    shadowed = [c * 0.25 for c in floor_colour]
    lit = [c * 0.85 for c in floor_colour]
    assert out["rgb"][1].tolist() == pytest.approx(shadowed)  # the box's shadow
    assert out["rgb"][2].tolist() == pytest.approx(shadowed)  # box and sphere above: not the removable's shadow
    assert out["rgb"][3].tolist() == pytest.approx(lit)
    assert out["depth"][4] == pytest.approx(6.0)
    assert out["removable_hit"].tolist() == [True, False, False, False, False]
    # the removable shadow: a floor point under the removable sphere only
    below = render_rays(scene, torch.tensor([[0.0, 0.2, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert below["removable_shadow"].tolist() == [True]
    assert below["rgb"][0].tolist() == pytest.approx(shadowed)
    without = render_rays(scene, torch.tensor([[0.0, 0.2, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]),
                          include_removable=False)
    assert without["rgb"][0].tolist() == pytest.approx(lit)
    assert without["removable_shadow"].tolist() == [False]
    # without the removable object, the ray that hit it reaches the floor
    again = render_rays(scene, origins[:1], directions[:1], include_removable=False)
    assert again["hit_id"].tolist() == [HIT_FLOOR] and again["depth"][0] == pytest.approx(5.0)


def test_checker_and_noise_textures():
    points = torch.tensor([[0.1, 0.1, 0.1], [0.6, 0.1, 0.1], [0.6, 0.6, 0.1]], dtype=torch.float64)
    checker = texture_albedo(Texture("checker", (1, 0, 0), (0, 0, 1), period=0.5), points)
    assert checker.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0]]
    noisy = Texture("noise", (0.5, 0.5, 0.5), noise_scale=0.1, noise_amplitude=0.8, seed=3)
    grid = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    values = texture_albedo(noisy, grid)[:, 0]
    assert values.min() >= 0.5 * 0.6 - 1e-12 and values.max() <= 0.5 * 1.4 + 1e-12
    assert values.std() > 0.02  # a real pattern, not a constant
    assert torch.equal(values, texture_albedo(noisy, grid)[:, 0])  # deterministic
    other_seed = Texture("noise", (0.5, 0.5, 0.5), noise_scale=0.1, noise_amplitude=0.8, seed=4)
    assert not torch.equal(values, texture_albedo(other_seed, grid)[:, 0])


def _nerfstudio_camera(c2w: torch.Tensor, fx=40.0, fy=42.0, cx=17.5, cy=11.0, width=32, height=24):
    from nerfstudio.cameras.cameras import Cameras, CameraType

    return Cameras(camera_to_worlds=c2w[None, :3, :4].float(), fx=fx, fy=fy, cx=cx, cy=cy, width=width,
                   height=height, camera_type=CameraType.PERSPECTIVE)


def test_camera_rays_match_nerfstudio_generate_rays():
    c2w = torch.from_numpy(look_at_opengl((2.0, -1.0, 1.5), (0.1, 0.2, 0.3)))
    camera = _nerfstudio_camera(c2w)
    bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
    origins, directions = camera_rays(c2w, 40.0, 42.0, 17.5, 11.0, 32, 24, supersample=1)
    assert directions.shape == bundle.directions.shape == (24, 32, 3)
    torch.testing.assert_close(directions.float(), bundle.directions, atol=1e-6, rtol=0)
    torch.testing.assert_close(origins.float(), bundle.origins, atol=1e-6, rtol=0)
    # subsamples average to the pixel centre: their mean direction (before normalising) is the centre ray's
    _, sub = camera_rays(c2w, 40.0, 42.0, 17.5, 11.0, 32, 24, supersample=3)
    assert torch.allclose(sub[1::3, 1::3], directions, atol=1e-12)


def _demo_scene() -> Scene:
    return Scene(
        [Primitive("box", (0, 0, 0.3), (0.3, 0.25, 0.3), yaw=0.3, texture=Texture("flat", RED), removable=True),
         Primitive("sphere", (0.9, 0.4, 0.25), (0.25, 0.25, 0.25), texture=Texture("checker", (0, 0, 1), (1, 1, 0),
                                                                                     period=0.1))],
        floor=Floor(0.0, None, Texture("checker_noise", (0.8, 0.7, 0.6), (0.5, 0.4, 0.3), period=0.4,
                                       noise_scale=0.1, noise_amplitude=0.6, seed=1)),
        walls=Walls((3, 3), 0.0, 3.0, Texture("noise", (0.6, 0.7, 0.8), noise_scale=0.2, noise_amplitude=0.7)),
        light=Light((0.3, 0.2, 0.9)), background=(0.7, 0.8, 0.9), supersample=2)


def test_render_nerfstudio_cameras_equals_render_camera_and_inverts_the_dataparser_transform():
    scene = _demo_scene()
    c2w = torch.from_numpy(look_at_opengl((2.0, -1.2, 1.4), (0.0, 0.0, 0.3)))
    # nerfstudio stores poses in float32: render the same rounded pose to compare exactly
    expected = render_camera(scene, c2w.float(), 40.0, 42.0, 17.5, 11.0, 32, 24)["rgb"]
    direct = render_nerfstudio_cameras(scene, _nerfstudio_camera(c2w))
    assert direct.shape == (1, 24, 32, 3)
    assert torch.equal(direct[0], expected)
    # a dataparser-normalised camera: P' = s * (T @ P) with T a rigid transform (rotation + translation)
    angle = 0.7
    transform = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0, 0.3],
                              [math.sin(angle), math.cos(angle), 0.0, -0.2],
                              [0.0, 0.0, 1.0, 0.5]], dtype=torch.float64)
    scale = 0.37
    normalised = transform[:, :3] @ c2w[:3, :4]
    normalised[:, 3] += transform[:, 3]
    normalised[:, 3] *= scale
    back = poses_to_capture_frame(normalised[None], transform, scale)[0]
    torch.testing.assert_close(back, c2w[:3, :4], atol=1e-12, rtol=0)
    via_transform = render_nerfstudio_cameras(scene, _nerfstudio_camera(normalised), transform, scale)
    # float32 camera storage moves rays by ~1e-7: at most a few edge subsamples can change
    assert (via_transform[0] - expected).abs().mean() < 1e-4
    without = render_nerfstudio_cameras(scene, _nerfstudio_camera(c2w), include_removable=False)
    assert (without[0] - expected).abs().max() > 0.1
    with pytest.raises(ValueError, match="both"):
        render_nerfstudio_cameras(scene, _nerfstudio_camera(c2w), transform, None)


def test_removable_mask_is_exactly_where_removal_changes_the_render():
    scene = _demo_scene()
    c2w = torch.from_numpy(look_at_opengl((1.8, -1.5, 1.3), (0.0, 0.0, 0.3)))
    with_object = render_camera(scene, c2w, 40.0, 40.0, 16.0, 12.0, 32, 24)
    without = render_camera(scene, c2w, 40.0, 40.0, 16.0, 12.0, 32, 24, include_removable=False)
    changed = (with_object["rgb"] != without["rgb"]).any(-1)
    assert torch.equal(changed, with_object["removable_mask"])
    assert 0.05 < changed.float().mean() < 0.6
    assert not without["removable_mask"].any()
    assert (without["hit_id"] != 0).all()


def test_load_dataparser_transform(tmp_path):
    (tmp_path / "dataparser_transforms.json").write_text(
        '{"transform": [[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": 0.25}')
    (tmp_path / "config.yml").write_text("")
    for where in (tmp_path, tmp_path / "dataparser_transforms.json", tmp_path / "config.yml"):
        transform, scale = load_dataparser_transform(where)
        assert transform[0, 3] == 0.5 and scale == 0.25
    with pytest.raises(DataError, match="dataparser_transforms.json"):
        load_dataparser_transform(tmp_path / "missing")
    (tmp_path / "dataparser_transforms.json").write_text('{"transform": [[1, 0, 0]], "scale": 1}')
    with pytest.raises(DataError, match="3x4"):
        load_dataparser_transform(tmp_path)


def test_scene_json_round_trip_and_validation(tmp_path):
    scene = _demo_scene()
    scene.to_json(tmp_path / "scene.json")
    loaded = Scene.from_json(tmp_path)
    assert loaded == scene
    assert loaded.removable_index == 0
    with pytest.raises(ValueError, match="at most one removable"):
        Scene([Primitive("sphere", (0, 0, 0), (1, 1, 1), removable=True)] * 2)
    with pytest.raises(ValueError, match="equal half extents"):
        Primitive("sphere", (0, 0, 0), (1, 2, 1))
    (tmp_path / "bad.json").write_text('{"version": 99}')
    with pytest.raises(DataError, match="version 99"):
        Scene.from_json(tmp_path / "bad.json")
    with pytest.raises(DataError, match="No scene description"):
        Scene.from_json(tmp_path / "nothing.json")
