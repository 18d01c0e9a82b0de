"""``ns-diffusion-synth``: each kind writes a capture; bad folders and options are refused with a clear message."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ns_diffusion_methods.synthetic.cli import main, train_command

SMALL = {
    "object-removal": ["--image-size", "32", "--num-views", "4", "--num-eval-views", "2"],
    "sparse-views": ["--image-size", "32", "--num-views", "4", "--num-eval-views", "2"],
    "objects": ["--image-size", "16", "--num-train", "2", "--num-test", "1", "--num-views", "3",
                "--num-test-views", "4", "--background", "floor", "--max-primitives", "2"],
}


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_each_kind_writes_a_capture(kind, tmp_path, capsys):
    output = tmp_path / kind
    assert main([kind, "--output", str(output), "--seed", "5", *SMALL[kind]]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote the {kind} capture to {output} in " in printed
    assert f"  {shlex.join(train_command(kind, output, 'floor'))}\n" in printed  # what to run next
    record = json.loads((output / "capture.json").read_text())
    assert record["kind"] == kind and record["seed"] == 5
    if kind == "objects":
        meta = json.loads((output / "meta.json").read_text())
        assert meta["background"] == "floor" and meta["views"] == [3, 4] and meta["image_size"] == 16
        assert len(list((output / "train").iterdir())) == 2 and len(list((output / "test").iterdir())) == 1
    else:
        frames = json.loads((output / "transforms.json").read_text())["frames"]
        assert len(frames) == 6 and frames[0]["file_path"] == "images/frame_train_00000.png"
        assert (output / "scene.json").is_file()
        assert (output / "spinnerf" / "poses_bounds.npy").is_file() == (kind == "object-removal")
    # running again over a previous capture replaces it
    assert main([kind, "--output", str(output), "--seed", "6", *SMALL[kind]]) == 0
    assert json.loads((output / "capture.json").read_text())["seed"] == 6


def test_refuses_a_foreign_folder_and_options_of_another_kind(tmp_path, capsys):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "IMG_0001.jpg").write_bytes(b"")
    assert main(["sparse-views", "--output", str(foreign), "--image-size", "32"]) == 1
    message = " ".join(capsys.readouterr().err.split())
    assert f"The output folder {foreign} is not empty and is not a capture written by ns-diffusion-synth" in message
    assert [p.name for p in foreign.iterdir()] == ["IMG_0001.jpg"]
    with pytest.raises(SystemExit) as error:
        main(["objects", "--output", str(tmp_path / "x"), "--num-eval-views", "3"])
    assert error.value.code == 2
    assert "--num-eval-views" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["object-removal", "--output", str(tmp_path / "x"), "--background", "floor"])
    assert not (tmp_path / "x").exists()


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).parent / "ns-diffusion-synth"
    if not script.exists():
        script = shutil.which("ns-diffusion-synth")
    assert script, "the ns-diffusion-synth console script is not installed (pip install -e . --no-deps)"
    result = subprocess.run([str(script), "objects", "--output", str(tmp_path / "o"), "--image-size", "16",
                             "--num-train", "1", "--num-test", "1", "--num-views", "2", "--num-test-views", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "train").is_dir()


@pytest.mark.parametrize("kind, background, method, dataparser", [
    ("object-removal", "white", "mald-nerf-small", "ObjectMaskDataParserConfig"),
    ("sparse-views", "white", "difix3d-nerfacto-small", "NerfstudioDataParserConfig"),
    ("objects", "white", "ssdnerf-small", "SRNDataParserConfig"),
    ("objects", "floor", "renderdiffusion-small", "SRNDataParserConfig"),
])
def test_the_printed_train_command_parses_as_ns_train_does(kind, background, method, dataparser, tmp_path):
    """``ns-train`` parses its arguments with ``tyro.cli(AnnotatedBaseConfigUnion)``; the printed command must give the
    method for the capture, with ``--data`` and a dataparser that reads the capture's layout."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    data = tmp_path / "my capture"  # a space: the printed command quotes it
    argv = shlex.split(shlex.join(train_command(kind, data, background)))
    assert argv[:2] == ["ns-train", method]
    config = tyro.cli(AnnotatedBaseConfigUnion, args=argv[1:])
    assert config.method_name == method and config.data == data
    assert type(config.pipeline.datamanager.dataparser).__name__ == dataparser
