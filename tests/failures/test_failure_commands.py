"""Failures of real commands (subprocesses): ``Error: <message>`` on stderr, status 1, no traceback, and no output
left that looks complete.

nerfstudio's ``ns-train``, ``ns-eval``, ``ns-render`` and ``ns-viewer`` show the package's errors this way through the
``sys.excepthook`` that the package's trainer, pipelines and dataparsers install when they start
(:func:`ns_diffusion_methods.errors.install_excepthook`; importing the package installs nothing); ``ns-diffusion``
through its entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

import harness
import numpy as np
import pytest
import torch
from failure_helpers import FAST_MALD_NERF, eval_frames, files_under, run_command, train_frames, user_error
from PIL import Image

from ns_diffusion_methods.errors import DataError, ResourceError

#: end-to-end runs (ns-train, ns-eval, a browser): deselect with -m "not slow" for the quick check
pytestmark = pytest.mark.slow


def test_the_hook_prints_user_errors_plainly_and_leaves_other_errors_their_traceback(capsys):
    from ns_diffusion_methods import errors

    previous = sys.excepthook
    errors.install_excepthook()  # what the package's runs do when they start
    assert sys.excepthook is errors._excepthook
    for error in (DataError("The mask m.png is empty. Fix it."), ValueError("a bug")):
        try:
            raise error
        except Exception as raised:  # noqa: BLE001 - what reaches the interpreter's top level
            sys.excepthook(type(raised), raised, raised.__traceback__)
        printed = capsys.readouterr().err
        if isinstance(error, DataError):
            assert printed == "Error: The mask m.png is empty. Fix it.\n"
        else:
            assert printed.startswith("Traceback (most recent call last)") and "ValueError: a bug" in printed
    sys.excepthook = previous


def test_ns_train_on_a_bad_mask(broken_capture, tmp_path):
    bad = []

    def edit(folder: Path, transforms: dict) -> None:
        bad.append(folder / train_frames(transforms)[3]["object_mask_path"])
        Image.open(bad[0]).resize((10, 10)).save(bad[0])

    capture = broken_capture(edit)
    output = tmp_path / "outputs"
    result = run_command("ns-train", "mald-nerf-small", "--machine.device-type", "cpu", "--vis", "tensorboard",
                         "--max-num-iterations", "1", "--output-dir", output, "--data", capture)
    message = user_error(result)
    assert f"{bad[0]}: is 10x10 (WxH)" in message and f"Fix the masks (or the frames' `object_mask_path`) in " \
                                                      f"{capture}" in message
    assert files_under(output) == []  # nerfstudio's config.yml is removed with the run folder


def test_ns_eval_without_evaluation_images(broken_capture, tmp_path):
    def no_eval_views(folder: Path, transforms: dict) -> None:
        transforms["frames"] = [f for f in transforms["frames"] if f not in eval_frames(transforms)]
        transforms["val_filenames"] = transforms["test_filenames"] = []

    capture = broken_capture(no_eval_views)
    config = harness.train("mald-nerf-small", capture, tmp_path / "outputs", flags=FAST_MALD_NERF, max_num_iterations=1)
    output = tmp_path / "eval.json"
    message = user_error(run_command("ns-eval", "--load-config", config, "--output-path", output))
    assert f"The capture {capture} has no object-free evaluation views" in message and "train again" in message
    assert not output.exists()


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("renders")
    generator = torch.Generator().manual_seed(0)
    for index in range(4):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"render_{index}.png")
    return folder


def test_ns_diffusion_fix_with_a_model_folder_without_weights(renders, tmp_path):
    from ns_diffusion_methods.fixers.difix.model import DifixModel

    model = DifixModel.tiny(seed=0).save_pretrained(tmp_path / "fixer")
    (model / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    output = tmp_path / "fixed"
    message = user_error(run_command("ns-diffusion", "fix", "--input", renders, "--output", output, "--model", model,
                                     "--device", "cpu"))
    assert f"The model folder {model} (for `{model}`) has no vae/diffusion_pytorch_model.safetensors" in message
    assert "point --model at a complete copy" in message
    assert not output.exists()


def test_a_fix_failing_halfway_leaves_no_output(renders, tmp_path, monkeypatch):
    from ns_diffusion_methods.fixers.commands import FixCommand
    from ns_diffusion_methods.fixers.difix.fixer import DifixFixer

    fix_images = DifixFixer.fix_images
    calls = []

    def fails_on_the_third_chunk(self, *args, **kwargs):
        calls.append(len(args[0]))
        if len(calls) == 3:
            raise ResourceError("Out of GPU memory fixing a single image.")
        return fix_images(self, *args, **kwargs)

    monkeypatch.setattr(DifixFixer, "fix_images", fails_on_the_third_chunk)
    output = tmp_path / "fixed"
    command = FixCommand(input=renders, output=output, model="tiny", device="cpu", chunk_size=1)
    with pytest.raises(ResourceError):
        command.main()
    assert calls == [1, 1, 1]  # two images were fixed before the failure ...
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == []  # ... and none is left
    monkeypatch.setattr(DifixFixer, "fix_images", fix_images)
    assert command.main() == 0
    written = sorted(p.name for p in output.iterdir())
    assert written == [f"render_{i}.png" for i in range(4)]
    assert np.asarray(Image.open(output / "render_0.png")).shape == (24, 32, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed"]  # no staging folder left
