"""Object masks from a click (``ns-diffusion point-masks``): the click's mask lifted with exact scene depth lands on the
object in every other frame (the prompts SAM gets there are object pixels), hidden frames get none, the segmenter
plumbing runs on a tiny random SAM saved and loaded like a real one, and a model that cannot be loaded is refused
with the command that fetches it."""

from __future__ import annotations

import numpy as np
import pytest

from ns_diffusion_methods.data.point_masks import (
    PointMaskSettings,
    derive_point_masks,
    find_view,
    load_segmenter,
    spread_points,
    tiny_sam,
)
from ns_diffusion_methods.errors import DataError, ModelUnavailableError, UserFacingError


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from ns_diffusion_methods.synthetic import write_object_removal

    return write_object_removal(tmp_path_factory.mktemp("points") / "capture", seed=3, image_size=48, num_views=6,
                                num_eval_views=2)


def _truths(capture, views):
    from scene_depth import SceneDepthModel

    from ns_diffusion_methods.synthetic.scene import Scene

    model = SceneDepthModel(Scene.from_json(capture / "scene.json"))
    truths = []
    for _, camera in views:
        model.get_outputs_for_camera(camera)
        truths.append(model.removable.numpy().copy())
    return model, truths


class OracleSegmenter:
    """Returns the object's true pixels for the clicked frame and, elsewhere, the region it is asked to match
    (the projected support): what a perfect segmenter guided by the prompts would return. Records the prompts."""

    def __init__(self, seed_truth):
        self.seed_truth = seed_truth
        self.calls = []

    def __call__(self, image, points, box, reference):
        self.calls.append((points, box, reference))
        return self.seed_truth if reference is None else reference


def test_a_click_reaches_the_object_in_every_frame_that_shows_it(capture):
    from scene_depth import training_cameras

    views = training_cameras(capture)
    model, truths = _truths(capture, views)
    seed = 2
    rows, cols = np.nonzero(truths[seed])
    click = [(float(cols.mean()) + 0.5, float(rows.mean()) + 0.5)]
    segment = OracleSegmenter(truths[seed])
    derived = derive_point_masks(model, views, seed, click, segment, PointMaskSettings(dilation=(0, 0)))
    assert segment.calls[0][0] == click and segment.calls[0][1] is None  # the click prompts the seed frame
    assert len(derived.masks) == len(views) and np.array_equal(derived.masks[seed], truths[seed])
    prompted = segment.calls[1:]
    assert len(prompted) == sum(t.any() for i, t in enumerate(truths) if i != seed)  # every frame showing it
    for (points, box, reference), truth in zip(prompted, [t for i, t in enumerate(truths) if i != seed and t.any()]):
        assert 1 <= len(points) <= 5
        assert all(truth[int(y), int(x)] for x, y in points)  # every prompt point is on the object in that frame
        rows, cols = np.nonzero(truth)
        x0, y0, x1, y1 = box  # the support's box lies within the object's
        assert x0 >= cols.min() - 1 and y0 >= rows.min() - 1 and x1 <= cols.max() + 2 and y1 <= rows.max() + 2
        # the projected region lies on the object (it covers the part the clicked frame saw; the segmenter completes
        # the rest)
        assert (reference & truth).sum() / reference.sum() > 0.9 and (reference & truth).sum() / truth.sum() > 0.35
    for mask, truth in zip(derived.masks, truths):
        assert (mask & truth).sum() / max(mask.sum(), 1) > 0.9 if truth.any() else not mask.any()


def test_hidden_object_gets_no_prompt_and_bad_clicks_are_refused(capture):
    from scene_depth import training_cameras

    views = training_cameras(capture)
    model, truths = _truths(capture, views)
    seed = 0
    nothing = np.zeros_like(truths[seed])
    with pytest.raises(DataError, match="found no opaque object pixel"):
        derive_point_masks(model, views, seed, [(3.0, 3.0)], OracleSegmenter(nothing), PointMaskSettings())
    with pytest.raises(UserFacingError, match="lies outside"):
        derive_point_masks(model, views, seed, [(500.0, 3.0)], OracleSegmenter(truths[seed]), PointMaskSettings())
    with pytest.raises(UserFacingError, match="none of the run's 6 frames"):
        find_view(views, "frame_missing")
    assert find_view(views, views[4][0].stem) == 4 and find_view(views, "1") == 1


def test_spread_points_start_at_the_centre_and_go_far():
    hit = np.zeros((9, 9), dtype=bool)
    hit[4, 0:9] = True  # a horizontal bar
    points = spread_points(hit, 3)
    assert points[0] == (4.5, 4.5)  # next to the centroid
    assert {points[1], points[2]} == {(0.5, 4.5), (8.5, 4.5)}  # then the two ends
    assert len(spread_points(hit, 20)) == 9


def test_tiny_sam_round_trip_and_the_unavailable_model_message(tmp_path, capture):
    from scene_depth import training_cameras

    model, processor = tiny_sam()
    model.save_pretrained(tmp_path / "sam")
    processor.save_pretrained(tmp_path / "sam")
    segment = load_segmenter(str(tmp_path / "sam"))
    image = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    mask = segment(image, [(10.0, 20.0), (30.0, 25.0)], (5.0, 5.0, 40.0, 40.0), None)
    assert mask.shape == (48, 64) and mask.dtype == bool
    reference = np.zeros((48, 64), dtype=bool)
    reference[10:30, 10:40] = True
    again = load_segmenter("tiny")(image, [(10.0, 20.0)], None, reference)  # chooses the candidate nearest the region
    assert again.shape == (48, 64)
    # the whole path on the capture with the tiny model: meaningless masks, but one per frame, of the frame's size
    views = training_cameras(capture)
    depth_model, _ = _truths(capture, views)
    derived = derive_point_masks(depth_model, views, 0, [(24.0, 24.0)], segment, PointMaskSettings(dilation=(0, 0)))
    height, width = derived.masks[0].shape
    assert (height, width) == (int(views[0][1].height), int(views[0][1].width))
    assert all(m.shape == (height, width) and m.dtype == bool for m in derived.masks)
    with pytest.raises(ModelUnavailableError, match="hf download facebook/sam-vit-base"):
        load_segmenter(str(tmp_path / "no-such-model"))


def test_the_command_refuses_a_missing_run_and_a_malformed_click(tmp_path):
    from ns_diffusion_methods.cli.main import main

    config = tmp_path / "config.yml"
    with pytest.raises(UserFacingError, match="does not exist"):
        main(["point-masks", "--load-config", str(config), "--view", "0", "--point", "3,4"])
    config.write_text("not used")
    with pytest.raises(UserFacingError, match="write a click as X,Y"):
        main(["point-masks", "--load-config", str(config), "--view", "0", "--point", "3;4"])
