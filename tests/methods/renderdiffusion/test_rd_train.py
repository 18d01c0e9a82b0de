"""End to end: ns-train renderdiffusion-small on CPU, ns-eval's reconstruction JSON, checkpoint round trip and resume,
and the ``ns-diffusion sample/inpaint renderdiffusion`` commands."""

from __future__ import annotations

import io
import json

import harness
import numpy as np
import pytest
import torch
from conftest import TINY_FLAGS
from PIL import Image
from rich.console import Console

from ns_diffusion_methods.cli.main import main as cli_main

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(floor_objects, tmp_path_factory):
    output = tmp_path_factory.mktemp("rd-runs")
    config = harness.train("renderdiffusion-small", floor_objects, output, flags=TINY_FLAGS, max_num_iterations=3)
    return config


def recording_console() -> Console:
    """A console that keeps what it shows, as a terminal would show it (progress bars are drawn)."""
    return Console(record=True, force_terminal=True, width=160, file=io.StringIO())


def _load(config):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, checkpoint, step = eval_setup(config, test_mode="test")
    return pipeline, checkpoint, step


def test_training_writes_a_checkpoint_with_the_ema_and_without_diffusion_state(trained):
    checkpoint = torch.load(harness.latest_checkpoint(trained), map_location="cpu")
    state = checkpoint["pipeline"]
    assert checkpoint["step"] == 2
    assert any(k.startswith("_model.ema_denoiser.encoder.") for k in state)
    assert int(state["_model.ema_updates"]) == 3
    assert set(checkpoint["optimizers"]) == {"encoder", "decoder"}
    # the EMA moved away from the trained weights' initial copy but is not equal to the trained weights
    live, ema = state["_model.denoiser.decoder.mlp.0.weight"], state["_model.ema_denoiser.decoder.mlp.0.weight"]
    assert not torch.equal(live, ema)


def test_checkpoint_round_trip_gives_identical_weights_and_reconstructions(trained):
    saved = torch.load(harness.latest_checkpoint(trained), map_location="cpu")["pipeline"]
    first, _, step = _load(trained)
    assert step == 2
    loaded = first.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(loaded[key].cpu(), value, rtol=0, atol=0, msg=key)
    second, _, _ = _load(trained)
    views = first.datamanager.eval_object(0, num_inputs=1)
    _, renders_a = first.reconstruct_object(views, views.input_views[0])
    _, renders_b = second.reconstruct_object(views, views.input_views[0])
    torch.testing.assert_close(renders_a, renders_b)
    assert renders_a.shape == (5, 3, 16, 16)


def test_ns_eval_writes_the_reconstruction_json(trained, tmp_path, monkeypatch):
    from ns_diffusion_methods.methods.renderdiffusion import pipeline as rd_pipeline

    console = recording_console()
    monkeypatch.setattr(rd_pipeline, "CONSOLE", console)
    out = harness.evaluate(trained, output_path=tmp_path / "eval.json", render_output_path=tmp_path / "renders")
    assert "renderdiffusion reconstruction: objects" in console.export_text()
    results = out["results"]
    assert out["method_name"] == "renderdiffusion-small"
    assert results["num_objects"] == 2.0 and results["t_r"] == 0.0
    for key in ("psnr", "ssim", "psnr_std"):
        assert np.isfinite(results[key]), key
    assert 0 < results["psnr"] < 60 and -1 <= results["ssim"] <= 1
    assert json.loads((tmp_path / "eval.json").read_text())["results"] == results
    assert len(list((tmp_path / "renders").glob("object_*.png"))) == 2


def test_resume_continues_the_ema_and_step(trained, floor_objects, tmp_path):
    config = harness.train("renderdiffusion-small", floor_objects, tmp_path, max_num_iterations=2,
                           flags=[*TINY_FLAGS, "--load-dir", str(trained.parent / "nerfstudio_models")])
    checkpoint = torch.load(harness.latest_checkpoint(config), map_location="cpu")
    assert checkpoint["step"] == 4
    assert int(checkpoint["pipeline"]["_model.ema_updates"]) == 5


def test_sample_and_inpaint_commands(trained, floor_objects, tmp_path, monkeypatch):
    from ns_diffusion_methods.methods.renderdiffusion import commands

    console = recording_console()
    monkeypatch.setattr(commands, "CONSOLE", console)
    assert cli_main(["sample", "renderdiffusion", "--load-config", str(trained), "--output", str(tmp_path / "s"),
                     "--num", "2", "--num-steps", "3", "--num-views", "4", "--scale", "1"]) == 0
    shown = console.export_text()  # a bar per object and a transient one per reverse step
    for text in ("Generating 2 objects", "object 1: reverse steps", "object 2: reverse steps", "3/3"):
        assert text in shown, text
    strip = Image.open(tmp_path / "s" / "sample_001_turntable.png")
    assert strip.size == (4 * 16, 16)
    assert Image.open(tmp_path / "s" / "sample_000_turntable.gif").n_frames == 4
    # without --output: outputs/ns-diffusion/sample/renderdiffusion/<timestamp>
    monkeypatch.chdir(tmp_path)
    assert cli_main(["sample", "renderdiffusion", "--load-config", str(trained), "--num", "1", "--num-steps", "1",
                     "--num-views", "2", "--scale", "1"]) == 0
    (default,) = (tmp_path / "outputs" / "ns-diffusion" / "sample" / "renderdiffusion").iterdir()
    assert (default / "sample_000_turntable.png").is_file()

    image_path = sorted((floor_objects / "test").glob("*/rgb/*.png"))[0]
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 5:11] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert cli_main(["inpaint", "renderdiffusion", "--load-config", str(trained), "--image", str(image_path),
                     "--mask", str(tmp_path / "mask.png"), "--output", str(tmp_path / "i"), "--num-steps", "3",
                     "--num-views", "3", "--scale", "1"]) == 0
    assert "Inpainting: reverse steps" in console.export_text()
    original = np.asarray(Image.open(image_path).convert("RGB"))
    inpainted = np.asarray(Image.open(tmp_path / "i" / "inpainted.png"))
    keep = mask == 0
    assert np.abs(inpainted[keep].astype(int) - original[keep].astype(int)).max() <= 1  # known pixels kept
    assert Image.open(tmp_path / "i" / "inpainted_turntable.png").size == (3 * 16, 16)


def test_pose_file_gives_the_training_camera_of_its_view(trained, floor_objects, tmp_path):
    """``inpaint --pose FILE`` reads an SRN pose as the run's dataparser placed that view (its radius and centre)."""
    from ns_diffusion_methods.methods.commands_common import read_pose

    pipeline, _, _ = _load(trained)
    parser = pipeline.datamanager.dataparser
    first_object = sorted(p for p in (floor_objects / "train").iterdir() if p.is_dir())[0]
    pose_file = sorted((first_object / "pose").glob("*.txt"))[0]
    c2w = read_pose(pose_file, parser.radius(), tuple(parser.config.center))
    torch.testing.assert_close(c2w, pipeline.datamanager.train_dataset.cameras.camera_to_worlds[0].cpu(),
                               atol=1e-5, rtol=0)
    image_path = sorted((first_object / "rgb").glob("*.png"))[0]
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 5:11] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert cli_main(["inpaint", "renderdiffusion", "--load-config", str(trained), "--image", str(image_path),
                     "--mask", str(tmp_path / "mask.png"), "--pose", str(pose_file), "--output", str(tmp_path / "i"),
                     "--num-steps", "2", "--num-views", "2", "--scale", "1"]) == 0


def test_inpaint_rejects_an_empty_mask(trained, floor_objects, tmp_path):
    from ns_diffusion_methods.errors import DataError
    from ns_diffusion_methods.methods.renderdiffusion.commands import InpaintCommand

    image_path = sorted((floor_objects / "test").glob("*/rgb/*.png"))[0]
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(DataError, match="no white pixels"):
        InpaintCommand(load_config=trained, image=image_path, mask=tmp_path / "empty.png", output=tmp_path).main()


def test_reconstruct_command_writes_a_turntable_and_the_triplane(trained, floor_objects, tmp_path, monkeypatch):
    """``ns-diffusion reconstruct renderdiffusion``: an image of another size is resized, t_r > 0 runs the reverse
    steps with a progress bar, and the saved triplane renders the written turntable."""
    from ns_diffusion_methods.methods.renderdiffusion import commands, procedures

    console = recording_console()
    monkeypatch.setattr(commands, "CONSOLE", console)
    image_path = sorted((floor_objects / "test").glob("*/rgb/*.png"))[0]
    Image.open(image_path).resize((24, 20)).save(tmp_path / "other_size.png")
    out = tmp_path / "r"
    assert cli_main(["reconstruct", "renderdiffusion", "--load-config", str(trained), "--image",
                     str(tmp_path / "other_size.png"), "--t-r", "20", "--num-steps", "3", "--num-views", "3",
                     "--camera-index", "1", "--scale", "1", "--output", str(out)]) == 0
    shown = console.export_text()
    assert "resizing it to the model's 16x16" in shown and "Reconstruction: reverse steps" in shown
    assert Image.open(out / "reconstruction_turntable.png").size == (3 * 16, 16)
    assert Image.open(out / "reconstruction_turntable.gif").n_frames == 3
    assert Image.open(out / "input.png").size == (16, 16)
    saved = torch.load(out / "triplane.pt")
    assert saved["planes"].shape == (1, 3, 4, 16, 16) and saved["t_r"] == 20
    pipeline, _, _ = _load(trained)
    train_c2w = pipeline.datamanager.train_dataset.cameras.camera_to_worlds[1].cpu()
    torch.testing.assert_close(saved["camera_to_world"][0], train_c2w)
    # the turntable's first frame is the saved triplane rendered at the image's camera
    with torch.no_grad():
        frame = procedures.render_views(pipeline.model.sampling_denoiser,
                                        procedures.Triplanes(saved["planes"], saved["rotations"]),
                                        saved["camera_to_world"][None], saved["intrinsics"][None], 16, 16)[0, 0]
    strip = np.asarray(Image.open(out / "reconstruction_turntable.png").convert("RGB"))[:, :16]
    expected = (frame.permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(strip.astype(float) - expected).max() <= 1
    # defaults: t_r from the run (0: one clean pass), output under outputs/ns-diffusion/reconstruct/renderdiffusion
    monkeypatch.chdir(tmp_path)
    assert cli_main(["reconstruct", "renderdiffusion", "--load-config", str(trained), "--image", str(image_path),
                     "--num-views", "2", "--scale", "1"]) == 0
    (default,) = (tmp_path / "outputs" / "ns-diffusion" / "reconstruct" / "renderdiffusion").iterdir()
    assert torch.load(default / "triplane.pt")["t_r"] == 0
    from ns_diffusion_methods.errors import UserFacingError

    with pytest.raises(UserFacingError, match="--t-r"):
        cli_main(["reconstruct", "renderdiffusion", "--load-config", str(trained), "--image", str(image_path),
                  "--t-r", "5000"])
