"""``ns-diffusion reconstruct ssdnerf``: a user's posed image(s) give the code ``ns-eval``'s held-out protocol computes
for the same views, seed and settings; training cameras stand in for missing pose files; bad inputs stop the command
before the run is loaded. Plus the shared helpers it adds (pose normalisation by hand, turntable cameras)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import harness
import numpy as np
import pytest
import torch
from PIL import Image

# the tiny ssdnerf-small overrides of the end-to-end tests (3 guided DDIM steps, 1 x 2 fine-tuning steps)
from test_ssdnerf_end_to_end import ITERATIONS, TINY_FLAGS, recording_console

from ns_diffusion_methods.cli.main import main as cli_main
from ns_diffusion_methods.errors import DataError, UserFacingError
from ns_diffusion_methods.methods.commands_common import normalised_pose, orbit_cameras, user_cameras
from ns_diffusion_methods.methods.ssdnerf.commands import ReconstructCommand

#: these train a tiny run and run the command end to end (the error and helper tests below are quick)
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(objects_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ssdnerf-reconstruct")
    return harness.train("ssdnerf-small", objects_dataset, out, flags=TINY_FLAGS, max_num_iterations=ITERATIONS,
                         dataparser=["srn-data"])


@pytest.fixture(scope="module")
def held_out(trained):
    """The run loaded as ns-eval loads it (the held-out split too)."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(trained, test_mode="test")
    return pipeline


def _as_user_files(objects_dataset: Path, obj, folder: Path) -> list:
    """Copy the input views of held-out ``obj`` (image and SRN pose file) to ``folder``; the command's arguments."""
    source = objects_dataset / "test" / obj.name
    images = sorted((source / "rgb").glob("*.png"))
    args = []
    for n, view in enumerate(obj.input_views):
        image, pose = folder / f"photo_{n}.png", folder / f"photo_{n}_pose.txt"
        shutil.copy(images[view], image)
        shutil.copy(source / "pose" / f"{images[view].stem}.txt", pose)
        args += ["--image", str(image), "--pose", str(pose)]
    return args


@slow
@pytest.mark.parametrize("num_inputs", [1, 2])
def test_reconstruction_of_posed_images_is_the_held_out_protocol(trained, held_out, objects_dataset, tmp_path,
                                                                 monkeypatch, num_inputs):
    from ns_diffusion_methods.methods.ssdnerf import commands
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import reconstruct, render_views

    console = recording_console()
    monkeypatch.setattr(commands, "CONSOLE", console)
    dm = held_out.datamanager
    obj = dm.eval_object(0, num_inputs)
    assert len(obj.input_views) == num_inputs
    out = tmp_path / "out"
    args = _as_user_files(objects_dataset, obj, tmp_path)
    assert cli_main(["reconstruct", "ssdnerf", "--load-config", str(trained), *args, "--output", str(out),
                     "--num-views", "3"]) == 0
    shown = console.export_text()
    for text in ("guided DDIM steps", "fine-tuning steps", "Rendering the turntable", "3/3"):
        assert text in shown, text

    # what it wrote
    code = torch.load(out / "code.pt")
    size = obj.images.shape[1]
    assert code.shape == (3, held_out.model.config.code_channels, 8, 8)
    assert Image.open(out / "reconstruction_turntable.png").size == (3 * size, size)
    assert Image.open(out / "reconstruction_turntable.gif").n_frames == 3
    assert len(list((out / "reconstruction_turntable").glob("frame_*.png"))) == 3
    summary = json.loads((out / "reconstruction.json").read_text())
    assert summary["settings"]["finetune_outer_steps"] == held_out.config.finetune_outer_steps[num_inputs - 1]
    for n, view in enumerate(obj.input_views):
        pair = np.asarray(Image.open(out / f"input_{n}.png"))
        target = (obj.images[view].numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(pair[:, :size], target)  # the input, then its re-render
        render = render_views(held_out.model, code, obj.cameras[view: view + 1])[0]
        assert np.abs(pair[:, size:].astype(int) - (render.clamp(0, 1).numpy() * 255).round()).max() <= 1
        mse = float((torch.round(render.clamp(0, 1) * 255) / 255 - obj.images[view]).square().mean())
        assert summary["input_psnr"][n] == pytest.approx(-10 * math.log10(mse), abs=1e-3)

    # the held-out protocol (ns-eval) for this object alone, with the run's seed: same code, same renders
    settings = held_out.reconstruction_settings(num_inputs)
    expected = reconstruct(held_out.model, [obj], settings, seed=held_out.config.eval_seed)[0]
    torch.testing.assert_close(code, expected, rtol=0, atol=0)  # the same computation
    monkeypatch.setattr(held_out.config, "eval_max_objects", 1)
    monkeypatch.setattr(held_out.config, "eval_num_input_views", (num_inputs,))
    monkeypatch.setattr(held_out.config, "eval_lpips", False)
    held_out.get_average_eval_image_metrics(output_path=tmp_path / "protocol")
    scored = obj.scored_views
    renders = render_views(held_out.model, code, obj.cameras[torch.tensor(scored)])
    for view, render in zip(scored, renders):
        protocol = np.asarray(Image.open(tmp_path / "protocol" / f"{num_inputs}v_{obj.name}_view{view:03d}.png"))
        assert np.array_equal(protocol[:, :size], (render.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    # a control: another seed gives another code, so the comparison above can tell them apart
    other = reconstruct(held_out.model, [obj], settings, seed=held_out.config.eval_seed + 1)[0]
    assert (other - code).abs().max() > 1e-3


@slow
def test_training_camera_stands_in_for_the_pose_and_other_sizes_are_resized(trained, held_out, objects_dataset,
                                                                           tmp_path, monkeypatch):
    """``--camera-index`` without ``--pose``: the image's camera is that training camera (pose and intrinsics); an
    image of another size is resized with a notice; ``--finetune False`` keeps the guided sample."""
    from ns_diffusion_methods.methods.ssdnerf import commands
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import reconstruct

    dm = held_out.datamanager
    index = int(dm.views_of_object[1][2])  # a training view of object 1
    train_cameras = dm.train_dataset.cameras
    cameras = user_cameras(held_out, [index])
    assert torch.equal(cameras.camera_to_worlds, train_cameras.camera_to_worlds[index: index + 1].cpu())
    for key in ("fx", "fy", "cx", "cy", "width", "height"):
        assert torch.equal(getattr(cameras, key), getattr(train_cameras, key)[index: index + 1].cpu()), key

    console = recording_console()
    monkeypatch.setattr(commands, "CONSOLE", console)
    image = dm.train_object(1).images[2]
    size = image.shape[0]
    Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).resize((size + 8, size + 8)).save(
        tmp_path / "large.png")
    out = tmp_path / "out"
    assert cli_main(["reconstruct", "ssdnerf", "--load-config", str(trained), "--image", str(tmp_path / "large.png"),
                     "--camera-index", str(index), "--num-views", "2", "--finetune", "False", "--seed", "3",
                     "--output", str(out)]) == 0
    shown = console.export_text()
    assert f"resizing it to the model's {size}x{size}" in shown and "guided DDIM steps" in shown
    assert "fine-tuning steps" not in shown
    summary = json.loads((out / "reconstruction.json").read_text())
    assert summary["camera_indices"] == [index] and summary["poses"] is None
    assert summary["settings"]["finetune"] == "none" and summary["seed"] == 3
    assert Image.open(out / "input_0.png").size == (2 * size, size)
    # the same procedure on the resized image at that training camera
    from ns_diffusion_methods.data.multi_object import ObjectViews
    from ns_diffusion_methods.methods.commands_common import read_image_at_size

    resized = read_image_at_size(tmp_path / "large.png", size, "RGB")[0].permute(1, 2, 0)
    views = ObjectViews(0, "large", cameras, resized[None], torch.arange(1), [0])
    expected = reconstruct(held_out.model, [views], replace(held_out.reconstruction_settings(1), finetune="none"),
                           seed=3)[0]
    torch.testing.assert_close(torch.load(out / "code.pt"), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------- errors, before the run is loaded
def _image(path: Path) -> Path:
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(path)
    return path


def _command(tmp_path: Path, **kwargs) -> ReconstructCommand:
    # a config that does not exist: an error about the inputs proves they are checked before the run is loaded
    kwargs.setdefault("image", [_image(tmp_path / "a.png")])
    return ReconstructCommand(load_config=tmp_path / "missing" / "config.yml", output=tmp_path / "out", **kwargs)


def test_more_than_two_images_are_refused(tmp_path):
    images = [_image(tmp_path / f"{n}.png") for n in range(3)]
    with pytest.raises(UserFacingError, match="from 1 or 2 images .* but 3 were given"):
        _command(tmp_path, image=images).main()


def test_images_and_poses_must_match(tmp_path):
    images = [_image(tmp_path / "a.png"), _image(tmp_path / "b.png")]
    (tmp_path / "p.txt").write_text(" ".join(["0"] * 16))
    with pytest.raises(UserFacingError, match="2 image.* but 1 pose file"):
        _command(tmp_path, image=images, pose=[tmp_path / "p.txt"]).main()
    with pytest.raises(UserFacingError, match="2 images need their cameras"):
        _command(tmp_path, image=images).main()  # neither poses nor a training camera per image
    with pytest.raises(UserFacingError, match="one index for all images or one per image"):
        _command(tmp_path, image=images, pose=[tmp_path / "p.txt"] * 2, camera_index=[0, 1, 2]).main()


def test_unreadable_image_and_malformed_pose_files_are_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="Cannot read image .*broken.png"):
        _command(tmp_path, image=[tmp_path / "broken.png"]).main()
    with pytest.raises(DataError, match="missing.png does not exist"):
        _command(tmp_path, image=[tmp_path / "missing.png"]).main()
    (tmp_path / "short.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 2\n")
    with pytest.raises(DataError, match="short.txt holds 12 values"):
        _command(tmp_path, pose=[tmp_path / "short.txt"]).main()
    (tmp_path / "words.txt").write_text("one two")
    with pytest.raises(DataError, match="Malformed pose file .*words.txt"):
        _command(tmp_path, pose=[tmp_path / "words.txt"]).main()
    with pytest.raises(DataError, match="nowhere.txt does not exist"):
        _command(tmp_path, pose=[tmp_path / "nowhere.txt"]).main()


def test_a_run_of_another_method_is_refused_before_loading(tmp_path):
    import yaml
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    config = tmp_path / "config.yml"
    config.write_text(yaml.dump(TrainerConfig(method_name="nerfacto", pipeline=VanillaPipelineConfig())))
    command = _command(tmp_path)
    command.load_config = config
    with pytest.raises(UserFacingError, match="is a run of nerfacto, not of ssdnerf"):
        command.main()
    (tmp_path / "other.yml").write_text("just: text\n")
    command.load_config = tmp_path / "other.yml"
    with pytest.raises(UserFacingError, match="other.yml is not a run config"):
        command.main()


# ---------------------------------------------------------------------- the shared helpers
def test_pose_normalisation_by_hand():
    """OpenCV -> OpenGL negates the y and z axes; the translation becomes (t - centre) / radius."""
    c2w = np.eye(4)
    c2w[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # x right -> world y, y down -> world z, forward -> world x
    c2w[:3, 3] = [2.0, -1.0, 0.5]
    got = normalised_pose(c2w, radius=0.5, center=(1.0, 0.0, 0.5))
    expected = torch.tensor([[0.0, 0.0, -1.0, 2.0], [1.0, 0.0, 0.0, -2.0], [0.0, -1.0, 0.0, 0.0]])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_orbit_cameras_turn_the_input_camera_about_the_up_axis():
    from nerfstudio.cameras.cameras import Cameras

    position = torch.tensor([1.5, 0.0, 0.8])
    z = position / position.norm()  # OpenGL: the camera looks down -z, at the origin
    x = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), z)
    x = x / x.norm()
    c2w = torch.stack([x, torch.linalg.cross(z, x), z, position], dim=1)[None]
    camera = Cameras(camera_to_worlds=c2w, fx=20.0, fy=21.0, cx=8.0, cy=7.0, width=16, height=14)
    orbit = orbit_cameras(camera, 4)
    assert orbit.shape == (4,) and torch.equal(orbit.camera_to_worlds[0], c2w[0])
    positions = orbit.camera_to_worlds[:, :, 3]
    # a quarter turn about +z per view: (1.5, 0) -> (0, 1.5) -> (-1.5, 0) -> (0, -1.5), at the same height
    torch.testing.assert_close(positions, torch.tensor([[1.5, 0, 0.8], [0, 1.5, 0.8], [-1.5, 0, 0.8], [0, -1.5, 0.8]]),
                               rtol=0, atol=1e-6)
    forward = -orbit.camera_to_worlds[:, :, 2]  # still looking at the origin
    torch.testing.assert_close(forward, -positions / positions.norm(dim=-1, keepdim=True), rtol=0, atol=1e-6)
    assert orbit.fy.flatten().tolist() == [21.0] * 4 and orbit.height.flatten().tolist() == [14] * 4
