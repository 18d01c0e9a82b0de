"""Accuracy rules of box-derived masks (``ns-diffusion masks``): the floor under the box, the object's shadow on it
and sub-pixel rays.

A quick run's floor is never exactly flat; where it lies a little above the box's bottom, floor inside the box's
footprint became object. Here a run is stood in for by the synthetic scene's exact depth with the floor lifted by a
known amount: one ray per pixel and no floor rule marks floor pixels (the control), the floor rule finds the lifted
plane and marks none. The plane fit itself is checked on hand-made point sets, and supersampling on a strip narrower
than a pixel that no pixel centre sees. The shadow rule is checked on the scene's own shadow (the renderer knows its
pixels) and on a hand-made floor with a dark patch at the object's foot and another away from it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ns_diffusion_methods.data.box_masks import (
    FLOOR_MAX_TILT_DEG,
    Box,
    BoxMaskSettings,
    FloorPlane,
    derive_masks,
    find_shadow,
    fit_floor,
    reduce_supersampled,
)
from ns_diffusion_methods.errors import UserFacingError


class LiftedFloorModel(torch.nn.Module):
    """Exact depth of the synthetic scene, except the floor, which the "run" reconstructed ``lift`` above its true
    height (rays hitting the floor end on the plane ``z = floor + lift``)."""

    def __init__(self, scene, lift: float):
        super().__init__()
        self.scene, self.lift = scene, lift
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def get_outputs_for_camera(self, camera, obb_box=None):
        from ns_diffusion_methods.synthetic.render import HIT_FLOOR, render_rays

        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        shape = rays.origins.shape[:2]
        origins, directions = rays.origins.reshape(-1, 3).double(), rays.directions.reshape(-1, 3).double()
        traced = render_rays(self.scene, origins, directions)
        depth = traced["depth"].clone()
        floor = traced["hit_id"] == HIT_FLOOR
        depth[floor] = (self.scene.floor.height + self.lift - origins[floor, 2]) / directions[floor, 2]
        hit = torch.isfinite(depth)
        self.truth = traced["removable_hit"].reshape(shape).numpy()
        self.shadow = traced["removable_shadow"].reshape(shape).numpy()
        self.floor = floor.reshape(shape).numpy()
        return {"depth": torch.where(hit, depth, torch.full_like(depth, 1e3)).float().reshape(*shape, 1),
                "accumulation": hit.float().reshape(*shape, 1), "rgb": traced["rgb"].float().reshape(*shape, 3)}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from ns_diffusion_methods.synthetic import write_object_removal

    return write_object_removal(tmp_path_factory.mktemp("accuracy") / "capture", seed=0, image_size=48, num_views=4,
                                num_eval_views=1)


def _views(capture):
    from scene_depth import training_cameras

    return training_cameras(capture)


def _per_view(model, views, box, settings):
    """Masks of each view, with the model's truth and floor pixels of that view."""
    out = []
    for view in views:
        mask = derive_masks(model, [view], box, settings).masks[0]
        out.append((mask, model.truth, model.floor))
    return out


def test_a_lifted_floor_inside_the_box_is_not_object(capture):
    from ns_diffusion_methods.data.mask_benchmark import object_box

    scene, box = object_box(capture, 1.2)  # the object's box, enlarged 1.2 times, its bottom just above the floor
    bottom = box.center[2] - box.size[2] / 2
    lift = bottom - scene.floor.height + 0.01 * box.size[2]  # the run's floor: 1% of the box's height above its bottom
    model = LiftedFloorModel(scene, lift)
    views = _views(capture)
    plain = BoxMaskSettings(dilation=(0, 0), floor_margin=0.0)
    floor_rule = BoxMaskSettings(dilation=(0, 0), shadow_darkening=0.0)  # the floor rule alone (the shadow: below)
    assert BoxMaskSettings().floor_margin > 0  # the rule is on by default
    old, new = _per_view(model, views, box, plain), _per_view(model, views, box, floor_rule)
    # the control: without the rule, floor pixels around the object's base are object in every view
    assert all((mask & floor).sum() > 0 for mask, _, floor in old)
    for (old_mask, truth, floor), (new_mask, _, _) in zip(old, new):
        assert truth.any() and not (new_mask & floor).any()  # no floor pixel left
        assert (new_mask & ~truth).sum() == 0  # nothing but the object
        old_iou = (old_mask & truth).sum() / (old_mask | truth).sum()
        new_iou = (new_mask & truth).sum() / (new_mask | truth).sum()
        assert new_iou >= 0.9 and new_iou > old_iou, (old_iou, new_iou)
    # the plane found is the lifted floor, in the box's frame (flat, at the lifted height)
    derived = derive_masks(model, views, box, floor_rule)
    assert derived.floor is not None and derived.floor.support > 0.5
    assert np.allclose(derived.floor.slope, 0.0, atol=1e-4)
    assert derived.floor.offset == pytest.approx(scene.floor.height + lift - box.center[2], abs=1e-4 * box.size[2])


def test_a_box_far_above_the_floor_finds_no_floor_and_keeps_its_masks(capture):
    """An object not standing on anything flat (here: the box's bottom half-way up the object): no plane stands out
    near the bottom face, so the rule changes nothing."""
    from ns_diffusion_methods.data.mask_benchmark import object_box

    scene, box = object_box(capture, 1.2)
    top = box.center[2] + box.size[2] / 2
    middle = box.center[2]
    upper = Box((box.center[0], box.center[1], (middle + top) / 2), (box.size[0], box.size[1], top - middle))
    model = LiftedFloorModel(scene, 0.0)
    views = _views(capture)[:2]
    with_rule = derive_masks(model, views, upper, BoxMaskSettings(dilation=(0, 0)))
    without = derive_masks(model, views, upper, BoxMaskSettings(dilation=(0, 0), floor_margin=0.0))
    assert with_rule.floor is None
    assert all(a.any() and np.array_equal(a, b) for a, b in zip(with_rule.masks, without.masks))


def _plane_points(generator, count, slope, offset, noise, half=1.0):
    xy = generator.uniform(-half, half, size=(count, 2))
    z = slope[0] * xy[:, 0] + slope[1] * xy[:, 1] + offset + generator.normal(0, noise, count)
    return np.column_stack([xy, z])


def test_the_floor_fit_by_hand():
    """A noisy, slightly tilted floor plus the object's walls and floaters: the floor's plane is found, and a plane
    tilted beyond the limit, or no plane at all, is refused."""
    generator = np.random.default_rng(5)
    size = (1.0, 1.0, 1.0)  # box frame: bottom face at z = -0.5
    slope, offset = (0.05, -0.03), -0.52
    floor = _plane_points(generator, 3000, slope, offset, 0.002)
    angle = generator.uniform(0, 2 * math.pi, 1500)  # a cylinder's wall, radius 0.4, from the floor up
    walls = np.column_stack([0.4 * np.cos(angle), 0.4 * np.sin(angle), generator.uniform(-0.52, -0.25, 1500)])
    floaters = generator.uniform([-1, -1, -0.75], [1, 1, -0.25], size=(500, 3))
    plane = fit_floor(np.concatenate([floor, walls, floaters]), size, tolerance=0.01)
    assert isinstance(plane, FloorPlane)
    assert plane.slope == pytest.approx(slope, abs=2e-3) and plane.offset == pytest.approx(offset, abs=2e-3)
    assert plane.support == pytest.approx(3000 / 5000, abs=0.05)
    # the height above the plane, by hand: a point 0.1 straight above it, along the plane's normal
    normal = np.array([-slope[0], -slope[1], 1.0]) / math.sqrt(1 + slope[0] ** 2 + slope[1] ** 2)
    on_plane = np.array([0.2, -0.1, slope[0] * 0.2 - slope[1] * 0.1 + offset])
    assert plane.height_above(on_plane + 0.1 * normal) == pytest.approx(0.1, abs=2e-3)
    # a wall, not a floor: tilted far beyond the limit
    steep = math.tan(math.radians(FLOOR_MAX_TILT_DEG + 15))
    assert fit_floor(_plane_points(generator, 3000, (steep, 0.0), -0.5, 0.002, half=0.2), size, 0.01) is None
    # points spread through the band: no plane holds enough of them
    assert fit_floor(generator.uniform([-1, -1, -0.75], [1, 1, -0.25], size=(3000, 3)), size, 0.01) is None
    # the floor far below the box's bottom (outside the searched band) is not looked for
    assert fit_floor(_plane_points(generator, 3000, (0, 0), -1.5, 0.002), size, 0.01) is None


class PlaneModel(torch.nn.Module):
    """A run whose surface is the plane ``z = -distance`` in front of a camera at the origin looking down ``-z``."""

    def __init__(self, distance: float):
        super().__init__()
        self.distance = distance
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def get_outputs_for_camera(self, camera, obb_box=None):
        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        depth = self.distance / -rays.directions[..., 2:3]
        return {"depth": depth, "accumulation": torch.ones_like(depth)}


def test_supersampling_keeps_a_strip_narrower_than_a_pixel():
    """8x8 pixels, focal length 10, the plane 10 away: pixel column j covers x in [j - 4, j - 3] and its centre ray
    meets the plane at x = j - 3.5. A strip x in [0.55, 1.35] (0.8 pixel wide) holds no pixel centre, so one ray per
    pixel loses it; with 4 x 4 rays, 2 of column 4's 4 sub-columns (x = 0.625, 0.875) and 1 of column 5's (1.125) fall
    in it: column 4 is object, column 5 is not."""
    from nerfstudio.cameras.cameras import Cameras

    camera = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=4.0, cy=4.0, width=8, height=8)
    strip = Box((0.95, 0.0, -10.0), (0.8, 100.0, 1.0))
    model = PlaneModel(10.0)
    views = [("view.png", camera)]
    single = derive_masks(model, views, strip, BoxMaskSettings(dilation=(0, 0), floor_margin=0.0)).masks[0]
    assert not single.any()
    fine = derive_masks(model, views, strip, BoxMaskSettings(dilation=(0, 0), floor_margin=0.0, supersample=4))
    expected = np.zeros((8, 8), bool)
    expected[:, 4] = True
    assert fine.masks[0].shape == (8, 8) and np.array_equal(fine.masks[0], expected)
    assert camera.width.item() == 8  # the view's camera is left as it was


def test_reducing_sub_pixel_rays_by_hand():
    rays = np.zeros((2, 6), bool)  # three 2x2 pixels holding 1, 2 and 4 rays in the box
    rays[0, 0] = True
    rays[0, 2:4] = True
    rays[:, 4:6] = True
    assert reduce_supersampled(rays, 2).tolist() == [[False, True, True]]
    assert reduce_supersampled(rays, 1) is rays


def test_settings_refuse_bad_values():
    with pytest.raises(UserFacingError, match="floor-margin"):
        BoxMaskSettings(floor_margin=0.6)
    with pytest.raises(UserFacingError, match="supersample"):
        BoxMaskSettings(supersample=0)


@pytest.fixture(scope="module")
def shadow_capture(tmp_path_factory):
    """Twelve views of 64 px: the floor's colour needs a few views per patch of floor (a capture's tens of views of
    hundreds of pixels give hundreds)."""
    from ns_diffusion_methods.synthetic import write_object_removal

    return write_object_removal(tmp_path_factory.mktemp("shadow") / "capture", seed=0, image_size=64, num_views=12,
                                num_eval_views=1)


def test_the_objects_shadow_joins_its_mask(shadow_capture):
    """The scene's exact depth and colour, a box around the object: with the shadow rule (the default) the masks
    hold the object and its shadow (the pixels the renderer says the object darkens); without it (the control) the
    shadow is missing from every mask that should hold it."""
    from ns_diffusion_methods.data.mask_benchmark import object_box

    scene, box = object_box(shadow_capture, 1.2)
    model = LiftedFloorModel(scene, 0.0)
    views = _views(shadow_capture)
    truths = []
    for view in views:  # each view's object and shadow pixels, as the renderer traces them
        model.get_outputs_for_camera(view[1])
        truths.append((model.truth, model.shadow))
    assert BoxMaskSettings().shadow_darkening > 0  # on by default
    with_shadow = derive_masks(model, views, box, BoxMaskSettings(dilation=(0, 0)))
    without = derive_masks(model, views, box, BoxMaskSettings(dilation=(0, 0), shadow_darkening=0.0))
    assert with_shadow.shadow is not None and with_shadow.shadow.shadow.any()
    assert sum(int(shadow.sum()) for _, shadow in truths) > 20  # the views see a shadow
    ious, plain_ious = [], []
    for mask, plain, (obj, shadow) in zip(with_shadow.masks, without.masks, truths):
        changed = obj | shadow
        assert not (plain & shadow).any()  # the control: the object alone
        ious.append((mask & changed).sum() / (mask | changed).sum())
        plain_ious.append((plain & changed).sum() / (plain | changed).sum())
        assert ious[-1] >= 0.9, (ious[-1], plain_ious[-1])
        if shadow.sum() >= 20:  # a shadow of a few pixels weighs less than the shadow's edge cells
            assert (mask & shadow).sum() >= 0.8 * shadow.sum() and ious[-1] > plain_ious[-1]
        assert (mask & ~changed).sum() <= 0.08 * changed.sum()  # little plain floor (where the shadow's edge crosses)
    assert np.mean(ious) > np.mean(plain_ious) + 0.05


def test_the_shadow_search_by_hand():
    """Floor points of a unit box's frame (bottom at z = -0.5) with luminance 0.8; a patch at 0.4 touching the box's
    footprint is shadow, the same patch away from it and a patch only 10 % darker are not; no floor, no shadow."""
    generator = np.random.default_rng(3)
    size = (1.0, 1.0, 1.0)
    floor = FloorPlane((0.0, 0.0), -0.5, 1.0)
    xy = generator.uniform(-1.0, 1.0, size=(40000, 2))  # the search spans twice the footprint: [-1, 1]^2
    points = np.column_stack([xy, np.full(len(xy), -0.5) + generator.normal(0, 0.005, len(xy))])
    luminance = np.full(len(xy), 0.8)
    at_foot = (xy[:, 0] > 0.45) & (xy[:, 0] < 0.85) & (np.abs(xy[:, 1]) < 0.2)  # overlaps the footprint's edge x=0.5
    away = (xy[:, 0] < -0.75) & (xy[:, 1] > 0.75)  # 0.25 from the footprint, floor between
    faint = (xy[:, 1] < -0.45) & (np.abs(xy[:, 0]) < 0.3)  # 10 % darker, overlapping the footprint's edge y=-0.5
    luminance[at_foot], luminance[away], luminance[faint] = 0.4, 0.4, 0.72
    shadow = find_shadow(points, luminance, size, floor, darkening=0.2)
    found = shadow.contains(points)
    inner = at_foot & (xy[:, 0] > 0.5) & (xy[:, 0] < 0.8) & (np.abs(xy[:, 1]) < 0.15)  # away from the patch's edges
    assert found[inner].all()
    assert not found[away].any() and not found[faint].any()
    bright = (luminance == 0.8) & ~(np.abs(xy) <= 0.5).all(axis=1)  # plain floor around the footprint
    assert found[bright].mean() < 0.03  # only in the cells the patch's edge crosses
    assert not find_shadow(points, luminance, size, floor, darkening=0.6).shadow.any()  # 0.4 is not 60 % darker
    lifted = points + np.array([0.0, 0.0, 0.3])  # nothing on the floor plane
    assert not find_shadow(lifted, luminance, size, floor, darkening=0.2).shadow.any()
