"""Object masks from a 3D box (``ns-diffusion masks``): the box's geometry against nerfstudio's own oriented box, the
inverse of the dataparser transform, depth conventions, clean-up, and masks derived with exact depth of the synthetic
scene against the object's true pixels; bad boxes are refused before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scene_depth import SceneDepthModel
from scene_depth import training_cameras as _cameras

from ns_diffusion_methods.data.box_masks import (
    Box,
    BoxMaskSettings,
    check_coverage,
    clean_mask,
    derive_masks,
    run_to_capture,
    surface_points,
    write_masks,
)
from ns_diffusion_methods.errors import DataError, UserFacingError


def test_box_parsing_and_clear_errors():
    box = Box.parse("0.1,0.2,0.3, 1,2,3")
    assert box.center == (0.1, 0.2, 0.3) and box.size == (1.0, 2.0, 3.0) and box.rotation == (0.0, 0.0, 0.0)
    assert Box.parse("0 0 0 1 1 1 0.5 0 0").rotation == (0.5, 0.0, 0.0)
    with pytest.raises(UserFacingError, match="6 or 9"):
        Box.parse("1,2,3")
    with pytest.raises(UserFacingError, match="numbers"):
        Box.parse("a,b,c,1,1,1")
    with pytest.raises(UserFacingError, match="positive"):
        Box.parse("0,0,0,1,0,1")


def test_a_yawed_box_by_hand():
    """A 2 x 0.5 x 0.5 box turned 90 degrees about z lies along y."""
    box = Box((0.0, 0.0, 0.0), (2.0, 0.5, 0.5), (0.0, 0.0, math.pi / 2))
    points = torch.tensor([[0.0, 0.9, 0.0], [0.9, 0.0, 0.0], [0.0, -0.9, 0.2], [0.0, 1.1, 0.0]])
    assert box.contains(points).tolist() == [True, False, True, False]


def test_the_box_agrees_with_the_viewers_crop_box():
    """The viewer crops with nerfstudio's OrientedBox.from_params(centre, rpy, scale); same points inside."""
    from nerfstudio.data.scene_box import OrientedBox

    generator = torch.Generator().manual_seed(0)
    points = torch.rand(4000, 3, generator=generator) * 3 - 1.5
    for rpy in [(0.3, -0.4, 1.1), (1.2, 0.5, -2.0)]:
        box = Box((0.1, -0.2, 0.3), (1.0, 0.6, 1.4), rpy)
        theirs = OrientedBox.from_params((0.1, -0.2, 0.3), rpy, (1.0, 0.6, 1.4)).within(points.double())
        assert torch.equal(box.contains(points.double()), theirs)


def test_run_coordinates_map_back_to_the_capture():
    angle = 0.7
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)
    transform = torch.cat([rotation, torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)], dim=1)
    capture_points = torch.randn(10, 3, dtype=torch.float64)
    run_points = 0.25 * (capture_points @ rotation.T + transform[:, 3])  # what nerfstudio's dataparser does
    assert torch.allclose(run_to_capture(run_points, transform, 0.25), capture_points)


def test_a_box_moved_to_run_coordinates_holds_the_same_points():
    angle = 0.9
    rotation = torch.tensor([[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)],
                             [0.0, math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    transform = torch.cat([rotation, torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)], dim=1)
    box = Box((0.2, 0.1, -0.3), (1.0, 0.5, 0.8), (0.1, 0.2, 0.7))
    points = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    run_points = 0.3 * (points @ rotation.T + transform[:, 3])
    assert torch.equal(box.to_run(transform, 0.3).contains(run_points), box.contains(points))
    assert box.contains(points).any()


def test_depth_along_the_ray_or_along_the_camera_axis():
    origin = torch.zeros(1, 3)
    raw = torch.tensor([[0.3, 0.4, -1.0]])  # a camera direction with axis component 1
    norm = raw.norm(dim=-1, keepdim=True)
    unit = raw / norm
    along_ray = surface_points(origin, unit, torch.tensor([[2.0]]), norm, depth_along_axis=False)
    assert torch.allclose(along_ray.norm(dim=-1), torch.tensor([2.0]))
    along_axis = surface_points(origin, unit, torch.tensor([[2.0]]), norm, depth_along_axis=True)
    assert torch.allclose(along_axis[0, 2], torch.tensor(-2.0))  # 2 units in front of the camera


def test_clean_up_fills_holes_drops_specks_and_dilates():
    mask = np.zeros((20, 20), bool)
    mask[4:12, 4:12] = True
    mask[7, 7] = False  # a hole
    mask[17, 17] = True  # a speck (1 of 64 pixels)
    cleaned = clean_mask(mask, min_component=0.05, dilation=(0, 0))
    assert cleaned[7, 7] and not cleaned[17, 17] and cleaned.sum() == 64
    grown = clean_mask(mask, min_component=0.05, dilation=(3, 1))
    assert grown.sum() == 100  # 8x8 -> 10x10


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    from ns_diffusion_methods.synthetic import write_object_removal

    return write_object_removal(tmp_path_factory.mktemp("box") / "capture", seed=3, image_size=48, num_views=6,
                                num_eval_views=2)


def _object_box(capture, margin=1.15):
    from ns_diffusion_methods.synthetic.scene import Scene

    scene = Scene.from_json(capture / "scene.json")
    prim = scene.primitives[scene.removable_index]
    half = np.asarray(prim.half_extents) * margin
    bottom = max(prim.center[2] - half[2], scene.floor.height + 0.02)  # just above the floor
    top = prim.center[2] + half[2]
    return scene, Box((prim.center[0], prim.center[1], (bottom + top) / 2),
                      (2 * half[0] * math.sqrt(2), 2 * half[1] * math.sqrt(2), top - bottom))


def test_masks_from_exact_depth_match_the_objects_pixels(capture, tmp_path):
    scene, box = _object_box(capture)
    model = SceneDepthModel(scene)
    views = _cameras(capture)
    truths = []
    derived = derive_masks(model, views[:1], box, BoxMaskSettings(dilation=(0, 0)))
    truths.append(model.removable.numpy())
    for view in views[1:]:
        one = derive_masks(model, [view], box, BoxMaskSettings(dilation=(0, 0)))
        derived.files += one.files
        derived.masks += one.masks
        truths.append(model.removable.numpy())
    for mask, truth in zip(derived.masks, truths):
        assert truth.any()
        iou = (mask & truth).sum() / (mask | truth).sum()
        assert iou >= 0.9, iou
    check_coverage(derived, box, BoxMaskSettings())
    write_masks(derived, tmp_path / "masks")
    written = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert written == sorted(f"{p.stem}.png" for p, _ in views)


def test_a_box_holding_nothing_or_everything_is_refused(capture):
    scene, _ = _object_box(capture)
    model = SceneDepthModel(scene)
    views = _cameras(capture)[:2]
    empty = Box((50.0, 50.0, 50.0), (0.1, 0.1, 0.1))
    derived = derive_masks(model, views, empty, BoxMaskSettings(dilation=(0, 0)))
    with pytest.raises(DataError, match="contains no surface of the run in any of its 2 views"):
        check_coverage(derived, empty, BoxMaskSettings())
    everything = Box((0.0, 0.0, 0.0), (200.0, 200.0, 200.0))
    derived = derive_masks(model, views, everything, BoxMaskSettings(dilation=(0, 0), min_accumulation=0.0))
    with pytest.raises(DataError, match="covers more than 90% of every view"):
        check_coverage(derived, everything, BoxMaskSettings())


class RunCoordinatesSceneModel(SceneDepthModel):
    """Exact depth of the synthetic scene for cameras in a run's coordinates (nerfstudio's oriented, scaled poses)."""

    def __init__(self, scene, transform, scale):
        super().__init__(scene)
        self.transform, self.scale = transform, scale

    def get_outputs_for_camera(self, camera, obb_box=None):
        from ns_diffusion_methods.synthetic.render import render_rays

        rays = camera.generate_rays(camera_indices=0, keep_shape=True)
        shape = rays.origins.shape[:2]
        origins = run_to_capture(rays.origins.reshape(-1, 3).double(), self.transform, self.scale)
        directions = rays.directions.reshape(-1, 3).double() @ self.transform[:3, :3].double()
        traced = render_rays(self.scene, origins, directions)
        depth = traced["depth"] * self.scale  # capture distances -> run distances
        hit = torch.isfinite(depth)
        return {"depth": torch.where(hit, depth, torch.full_like(depth, 1e3)).float().reshape(*shape, 1),
                "accumulation": hit.float().reshape(*shape, 1), "rgb": traced["rgb"].float().reshape(*shape, 3)}


@pytest.mark.slow
@pytest.mark.parametrize("frame", ["capture", "run"])
def test_the_command_writes_a_capture_mald_nerf_reads(capture, tmp_path, monkeypatch, frame):
    """ns-diffusion masks on a real (1-step) nerfacto run of the capture, its model replaced by exact scene depth in the
    run's coordinates: the box in either frame gives masks that match the object, written as object-mask-data reads
    them."""
    import harness
    import nerfstudio.utils.eval_utils as eval_utils

    from ns_diffusion_methods.cli.main import main
    from ns_diffusion_methods.data.masks import read_object_mask
    from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig

    config_path = harness.train("nerfacto", capture, tmp_path / "run", flags=harness.SMALL_NERFACTO_FLAGS,
                                max_num_iterations=1)
    meta = json.loads((config_path.parent / "dataparser_transforms.json").read_text())
    transform, scale = torch.tensor(meta["transform"], dtype=torch.float64), float(meta["scale"])
    scene, box = _object_box(capture)
    real_setup = eval_utils.eval_setup

    def setup_with_scene_depth(path, **kwargs):
        config, pipeline, checkpoint, step = real_setup(path, **kwargs)
        pipeline._model = RunCoordinatesSceneModel(scene, transform, scale)
        return config, pipeline, checkpoint, step

    monkeypatch.setattr(eval_utils, "eval_setup", setup_with_scene_depth)
    if frame == "run":  # the same box as the viewer would show it: centre and sizes through the dataparser transform
        box = box.to_run(transform, scale)
    text = ",".join(f"{v:.6f}" for v in (*box.center, *box.size, *box.rotation))
    output = tmp_path / "with-masks"
    code = main(["masks", "--load-config", str(config_path), "--box", text, "--output", str(output), "--frame", frame,
                 "--dilate", "0", "0"])
    assert code == 0
    written = json.loads((output / "transforms.json").read_text())
    train = [f for f in written["frames"] if "train" in f["file_path"]]
    assert all("object_mask_path" in f for f in train)
    outputs = ObjectMaskDataParserConfig(data=output).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == len(train)
    truth = json.loads((capture / "transforms.json").read_text())
    for frame_meta in train:
        derived = read_object_mask(output / frame_meta["object_mask_path"])
        true = next(f for f in truth["frames"] if f["file_path"] == frame_meta["file_path"])
        reference = read_object_mask(capture / true["object_mask_path"])  # object and its shadow
        assert (derived & reference).sum() / derived.sum() > 0.9  # the derived mask lies on the object (and shadow)
        assert (derived & reference).sum() / reference.sum() > 0.7  # ... and holds most of them


def test_the_benchmark_box_holds_the_object_and_its_true_pixels_lie_in_the_captures_masks(capture):
    """The benchmark's truth (object and shadow pixels at pixel centres) is what the capture's masks mark."""
    from ns_diffusion_methods.data.mask_benchmark import object_box, true_object_pixels
    from ns_diffusion_methods.data.masks import read_object_mask

    scene, bench_box = object_box(capture, 1.2)
    prim = scene.primitives[scene.removable_index]
    assert bench_box.contains(torch.tensor([prim.center], dtype=torch.float64)).item()
    assert bench_box.center[2] - bench_box.size[2] / 2 > scene.floor.height  # the floor is outside the box
    meta = json.loads((capture / "transforms.json").read_text())
    frame = next(f for f in meta["frames"] if "train" in f["file_path"])
    truth, shadow = true_object_pixels(scene, meta, frame)
    captured = read_object_mask(capture / frame["object_mask_path"])  # the object and its shadow
    assert truth.any() and (truth & ~captured).sum() <= 0.05 * truth.sum()
    assert not (truth & shadow).any() and (shadow & ~captured).sum() <= 0.05 * max(1, shadow.sum())


# ------------------------------------------------------------------------------------ the viewer's panel (no browser)
def test_the_viewers_crop_box_gives_the_same_numbers_as_box():
    """The panel's "Use the crop box" reads nerfstudio's crop (ControlPanel.crop_obb): Crop center, Crop scale and Crop
    rotation are --box's numbers, and the box holds what the viewer's crop holds."""
    from types import SimpleNamespace

    from nerfstudio.data.scene_box import OrientedBox

    from ns_diffusion_methods.data.masks_viewer import crop_box_of

    centre, rpy, scale = (0.1, -0.2, 0.3), (0.3, -0.4, 1.1), (1.0, 0.6, 1.4)
    box = crop_box_of(SimpleNamespace(crop_obb=OrientedBox.from_params(centre, rpy, scale)))
    assert np.allclose(box.center, centre) and np.allclose(box.size, scale) and np.allclose(box.rotation, rpy)
    points = torch.rand(4000, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3 - 1.5
    theirs = OrientedBox.from_params(centre, rpy, scale).within(points)
    assert torch.equal(box.contains(points), theirs) and theirs.any()


def test_the_panels_command_line_gives_back_its_box_and_settings():
    import shlex
    from pathlib import Path

    from ns_diffusion_methods.cli.main import COMMANDS
    from ns_diffusion_methods.data.commands import MasksCommand
    from ns_diffusion_methods.data.masks_viewer import command_line

    assert COMMANDS["masks-viewer"][1] == "MasksViewerCommand"
    box = Box((0.1, -0.25, 1 / 3), (0.3, 0.25, 0.5), (0.0, 0.1, -2.5))
    settings = BoxMaskSettings(min_accumulation=0.2, min_component=0.0, dilation=(3, 2), floor_margin=0.05,
                               shadow_darkening=0.0, supersample=2)
    words = shlex.split(command_line(Path("runs/my run/config.yml"), box, settings, Path("out dir")))
    assert words[:2] == ["ns-diffusion", "masks"]
    import tyro

    parsed = tyro.cli(MasksCommand, args=words[2:], config=(tyro.conf.FlagConversionOff,))
    assert parsed.load_config == Path("runs/my run/config.yml") and parsed.output == Path("out dir")
    assert Box.parse(parsed.box) == box  # exactly: the numbers read back as the same floats
    assert (parsed.min_accumulation, parsed.min_component, tuple(parsed.dilate)) == (0.2, 0.0, (3, 2))
    assert (parsed.floor_margin, parsed.shadow_darkening, parsed.supersample) == (0.05, 0.0, 2)
    # defaults are left out; a missing output folder shows the placeholder
    plain = command_line(Path("c.yml"), box, BoxMaskSettings(), None)
    assert "--min-accumulation" not in plain and "--dilate" not in plain and plain.endswith("--output DIR")
    assert "--shadow-darkening" not in plain and "--floor-margin" not in plain
    multiline = command_line(Path("c.yml"), box, BoxMaskSettings(), None, multiline=True)
    assert multiline.replace(" \\\n    ", " ") == plain


def test_the_viewer_panel_writes_the_masks_of_its_box(capture, tmp_path):
    """The panel on a real viser server (no browser), writing with exact scene depth: its box and settings come from
    its inputs; "Write masks" writes what masks_from_views writes for that box, reports each view's coverage, and
    says why nothing was written for a missing output folder, an empty box or a used folder."""
    import socket

    import viser

    from ns_diffusion_methods.data.box_masks import masks_from_views
    from ns_diffusion_methods.data.masks import read_object_mask
    from ns_diffusion_methods.data.masks_viewer import MasksPanel

    scene, box = _object_box(capture)
    model = SceneDepthModel(scene)
    views = _cameras(capture)
    written = []

    def write(box, settings, output, progress):
        written.append((box, settings, output))
        return masks_from_views(model, views, capture, box, settings, output, progress=progress)

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = viser.ViserServer(host="127.0.0.1", port=port, verbose=False)
    try:
        panel = MasksPanel(tmp_path / "run" / "config.yml", write, len(views))
        panel.install(server, scale=10.0)
        panel.set_box(box)
        panel.dilate_kernel.value, panel.dilate_times.value = 0, 0
        assert not panel.write_masks() and not written  # no output folder yet
        assert "Nothing was written" in panel.status.content and "Output folder" in panel.status.content
        panel.output_text.value = str(tmp_path / "gui")
        panel.redraw()
        assert np.allclose(panel.gizmo.position, np.asarray(box.center) * 10)
        assert Box.parse(panel.command.content.split("--box=")[1].split()[0]) == box
        assert f"--output {tmp_path / 'gui'}" in panel.command.content
        assert panel.write_masks(), panel.status.content
        assert written[-1][0] == box and written[-1][1].dilation == (0, 0) and written[-1][2] == tmp_path / "gui"
        # the same masks as the shared code path with that box, each view's coverage in the panel
        expected = derive_masks(model, views, box, BoxMaskSettings(dilation=(0, 0)))
        meta = json.loads((tmp_path / "gui" / "transforms.json").read_text())
        by_file = {f["file_path"]: f for f in meta["frames"]}
        for (path, _), mask in zip(views, expected.masks):
            frame = by_file[str(path.relative_to(capture))]
            assert np.array_equal(read_object_mask(tmp_path / "gui" / frame["object_mask_path"]), mask)
            suffix = "" if mask.any() else " (evaluation view)"
            assert f"| {path.name} | {mask.mean():.1%}{suffix} |" in panel.status.content
        assert "**Wrote**" in panel.status.content and not panel.write_button.disabled
        # a box with nothing in it: the command's refusal, shown in the panel; nothing written
        panel.set_box(Box((50.0, 50.0, 50.0), (0.1, 0.1, 0.1)))
        panel.output_text.value = str(tmp_path / "empty")
        assert not panel.write_masks()
        assert "Nothing was written" in panel.status.content and "contains no surface" in panel.status.content
        assert not (tmp_path / "empty").exists()
        # the folder of the first write is not overwritten
        panel.set_box(box)
        panel.output_text.value = str(tmp_path / "gui")
        assert not panel.write_masks() and "already exists and is not empty" in panel.status.content
    finally:
        server.stop()
