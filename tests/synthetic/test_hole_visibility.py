"""How much of a test view's hole other training views show unmasked: a hand-made scene, and the two
object-removal capture kinds (``hole="seen"`` / ``"unseen"``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ns_diffusion_methods.synthetic import Floor, Light, Primitive, Scene, Texture, look_at_opengl, render_camera
from ns_diffusion_methods.synthetic.captures import capture_hole_visibility, hole_visibility, write_object_removal

#: 32 x 24 pixels, 50° horizontal field of view
INTR = {"w": 32, "h": 24, "fl_x": 34.3, "fl_y": 34.3, "cx": 16.0, "cy": 12.0}


def _scene(occluder: bool = False) -> Scene:
    """A sphere floating above a floor; the light is nearly horizontal, so its shadow falls far outside every view
    and the hole of a view from straight above is the sphere's silhouette, with floor behind it."""
    primitives = [Primitive("sphere", (0.0, 0.0, 0.5), (0.2, 0.2, 0.2), texture=Texture("flat", (0.9, 0.1, 0.1)),
                            removable=True)]
    if occluder:  # a fixed box on the line between the side camera and the floor under the sphere
        primitives.append(Primitive("box", (0.0, -1.5, 1.0), (0.3, 0.3, 0.3)))
    return Scene(primitives, Floor(0.0, None, Texture("checker", (0.8, 0.8, 0.8), (0.3, 0.3, 0.3), period=0.3)),
                 light=Light((1.0, 0.0, 0.05)), supersample=1)


def _mask(scene: Scene, c2w: np.ndarray) -> np.ndarray:
    out = render_camera(scene, c2w, INTR["fl_x"], INTR["fl_y"], INTR["cx"], INTR["cy"], INTR["w"], INTR["h"],
                        supersample=1)
    return out["removable_mask"].numpy()


ABOVE = look_at_opengl((0.0, 0.0, 3.0), (0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0))  # the test view, straight down
SIDE = look_at_opengl((0.0, -3.0, 2.0), (0.0, 0.0, 0.0))  # sees the floor under the sphere past it
AWAY = look_at_opengl((0.0, -3.0, 2.0), (0.0, -10.0, 0.0))  # looks the other way


@pytest.mark.parametrize("views, expected", [
    (["above"], 0.0),  # the same pose: every hole pixel lands on a masked pixel
    (["side"], 1.0),  # the floor under the sphere is in frame, unoccluded and unmasked
    (["above", "side"], 1.0),  # any training view counts
    (["away"], 0.0),  # out of frame
])
def test_visible_fraction_by_hand(views, expected):
    scene = _scene()
    poses = {"above": ABOVE, "side": SIDE, "away": AWAY}
    hole = _mask(scene, ABOVE)
    assert 10 < hole.sum() < 100
    train = [poses[name] for name in views]
    (fraction,) = hole_visibility(scene, INTR, train, [_mask(scene, c2w) for c2w in train], [ABOVE], [hole])
    assert fraction == pytest.approx(expected)


def test_an_occluder_hides_the_hole_and_a_mask_counts_as_unseen():
    scene = _scene(occluder=True)
    hole = _mask(scene, ABOVE)
    (occluded,) = hole_visibility(scene, INTR, [SIDE], [_mask(scene, SIDE)], [ABOVE], [hole])
    assert occluded == pytest.approx(0.0)
    clear = _scene()
    everything_masked = np.ones_like(hole)
    (masked,) = hole_visibility(clear, INTR, [SIDE], [everything_masked], [ABOVE], [hole])
    assert masked == pytest.approx(0.0)


def test_unseen_captures_hide_the_hole_that_seen_captures_show(tmp_path):
    options = {"seed": 3, "image_size": 32, "num_views": 8, "num_eval_views": 3}
    seen = write_object_removal(tmp_path / "seen", **options)
    unseen = write_object_removal(tmp_path / "unseen", hole="unseen", **options)
    seen_fraction = capture_hole_visibility(seen)
    unseen_fraction = capture_hole_visibility(unseen)
    assert len(seen_fraction) == len(unseen_fraction) == 3
    assert np.mean(seen_fraction) > 0.4 and max(unseen_fraction) < 0.25
    record = json.loads((unseen / "capture.json").read_text())
    assert record["hole_visible_fraction"] == pytest.approx(unseen_fraction)
    assert "hole" not in json.loads((seen / "capture.json").read_text())  # seen captures keep their files
    with pytest.raises(Exception, match="'seen' or 'unseen'"):
        write_object_removal(tmp_path / "other", hole="hidden", **options)
