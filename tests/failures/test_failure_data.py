"""Bad data stops ``ns-train`` before training, with a message naming the file and what to do, and no run folder.

Each case runs nerfstudio's ``ns-train`` code path in-process (``harness.train``: tyro parsing and
``nerfstudio.scripts.train.main``) on a broken copy of a synthetic capture. That the message reaches the terminal
without a traceback is checked on real processes in ``test_failure_commands.py``. The dataparsers' own checks are
tested function by function in ``tests/data``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List, Tuple

import harness
import numpy as np
import pytest
from failure_helpers import FAST_MALD_NERF, files_under, train_frames, user_error
from PIL import Image

from ns_diffusion_methods.errors import DataError


def _image(frame_index: int) -> Callable[[Path, dict], Path]:
    def path(folder: Path, transforms: dict) -> Path:
        return folder / train_frames(transforms)[frame_index]["file_path"]
    return path


def _mask(frame_index: int) -> Callable[[Path, dict], Path]:
    def path(folder: Path, transforms: dict) -> Path:
        return folder / train_frames(transforms)[frame_index]["object_mask_path"]
    return path


def _rewrite_mask(path: Path, values: Callable[[np.ndarray], np.ndarray]) -> None:
    mask = np.asarray(Image.open(path))
    Image.fromarray(values(mask).astype(np.uint8)).save(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _delete_intrinsics(transforms: dict) -> None:
    for key in ("fl_x", "fl_y"):
        transforms.pop(key)


#: name -> (the file the message must name, how to break the capture, fragments of the message: what and what to do)
CASES = {
    "missing image": (_image(0), lambda f, t, p: p.unlink(), ["does not exist", "Restore or replace these files"]),
    "corrupt image": (_image(1), lambda f, t, p: p.write_bytes(b"not an image"),
                      ["cannot be read as an image", "Restore or replace these files"]),
    "truncated image": (_image(2), lambda f, t, p: _truncate(p), ["cannot be read as an image"]),
    "mask of the wrong size": (_mask(3), lambda f, t, p: Image.open(p).resize((10, 10)).save(p),
                               ["is 10x10 (WxH)", "Fix the masks"]),
    "empty mask": (_mask(4), lambda f, t, p: _rewrite_mask(p, np.zeros_like), ["is empty", "Fix the masks"]),
    "full mask": (_mask(5), lambda f, t, p: _rewrite_mask(p, lambda m: np.full_like(m, 255)),
                  ["covers the whole image", "Fix the masks"]),
    "no frames": (lambda f, t: f / "transforms.json", lambda f, t, p: t.pop("frames"),
                  ['no "frames" list', "ns-process-data"]),
    "frame without file_path": (lambda f, t: f / "transforms.json",
                                lambda f, t, p: train_frames(t)[6].pop("file_path"),
                                ["frame", "lacks file_path", "Fix these frames or remove them"]),
    "no intrinsics": (lambda f, t: f / "transforms.json", lambda f, t, p: _delete_intrinsics(t),
                      ["gives no fl_x, fl_y", "Add them"]),
    "incomplete split lists": (lambda f, t: f / "transforms.json",
                               lambda f, t, p: [t.pop("train_filenames"), t.pop("val_filenames")],
                               ["has test_filenames but no train_filenames, val_filenames", "Add the missing lists"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_capture_stops_ns_train_before_training(case, broken_capture, tmp_path):
    target, breaks, fragments = CASES[case]
    named: List[Path] = []

    def edit(folder: Path, transforms: dict) -> None:
        path = target(folder, transforms)
        named.append(path)
        breaks(folder, transforms, path)

    capture = broken_capture(edit)
    output = tmp_path / "outputs"
    with pytest.raises(DataError) as info:
        harness.train("mald-nerf-small", capture, output, flags=FAST_MALD_NERF, max_num_iterations=1)
    message = str(info.value)
    for fragment in [str(named[0]), *fragments]:
        assert fragment in message, (fragment, message)
    assert files_under(output) == []  # no config.yml of a run that never started


def test_difix3d_on_nerfstudio_data_names_a_corrupt_image(broken_capture, tmp_path):
    corrupt: List[Path] = []

    def edit(folder: Path, transforms: dict) -> None:
        corrupt.append(folder / train_frames(transforms)[0]["file_path"])
        corrupt[0].write_bytes(b"\x89PNG garbage")

    capture = broken_capture(edit)
    with pytest.raises(DataError, match="cannot be read as an image") as info:
        harness.train("difix3d-nerfacto-small", capture, tmp_path / "outputs", max_num_iterations=1,
                      flags=["--vis", "tensorboard", "pipeline.fixer:difix", "--pipeline.fixer.model", "tiny"],
                      dataparser=["nerfstudio-data", "--eval-mode", "filename"])
    assert str(corrupt[0]) in str(info.value)
    assert files_under(tmp_path / "outputs") == []


def test_spinnerf_data_names_a_corrupt_image(object_removal_capture, tmp_path):
    scene = tmp_path / "spinnerf"
    shutil.copytree(object_removal_capture / "spinnerf", scene)
    corrupt = sorted((scene / "images_4").glob("*.png"))[-1]
    corrupt.write_bytes(b"GIF89a but not really")
    num_test = len(list((object_removal_capture / "images").glob("frame_eval_*.png")))
    with pytest.raises(DataError, match="cannot be read as an image") as info:
        harness.train("mald-nerf-small", scene, tmp_path / "outputs", flags=FAST_MALD_NERF, max_num_iterations=1,
                      dataparser=["spinnerf-data", "--num-test-views", str(num_test)])
    assert str(corrupt) in str(info.value) and "poses_bounds.npy" in str(info.value)
    assert files_under(tmp_path / "outputs") == []


def test_srn_object_with_missing_pose_files(objects_dataset, tmp_path):
    data = tmp_path / "objects"
    shutil.copytree(objects_dataset, data)
    obj = sorted((data / "train").iterdir())[1]
    poses: List[Tuple[Path, Path]] = []
    for image in sorted((obj / "rgb").glob("*.png"))[2:4]:
        pose = obj / "pose" / f"{image.stem}.txt"
        pose.unlink()
        poses.append((image, pose))
    with pytest.raises(DataError) as info:
        harness.train("ssdnerf-small", data, tmp_path / "outputs", dataparser=["srn-data"], max_num_iterations=1,
                      flags=["--vis", "tensorboard"])
    message = str(info.value)
    image, pose = poses[0]
    assert f"{pose} is missing" in message and str(image) in message
    assert "Add the pose or delete the image" in message
    assert files_under(tmp_path / "outputs") == []


def _broken_scan(path: Path) -> None:
    """Break a JPEG's scan data halfway with a stray marker segment (the file keeps its length and end marker)."""
    data = path.read_bytes()
    start = data.index(b"\xff\xda")
    scan = start + 2 + int.from_bytes(data[start + 2:start + 4], "big")
    middle = scan + (len(data) - 2 - scan) // 2
    path.write_bytes(data[:middle] + b"\xff\xc4\x00\x10" + data[middle + 4:])


@pytest.mark.parametrize("damage", ["truncated", "broken scan data"])
def test_a_damaged_jpeg_of_a_processed_capture_is_named_before_training(damage, object_removal_capture, tmp_path):
    from user_captures import write_processed_capture

    capture = write_processed_capture(object_removal_capture, tmp_path / "capture", frames_subset="train",
                                      image_format="jpg", mask_folder="masks", object_mask_entries=True)
    damaged = capture / "images" / "frame_00005.jpg"
    _truncate(damaged) if damage == "truncated" else _broken_scan(damaged)
    output = tmp_path / "outputs"
    with pytest.raises(DataError) as info:
        harness.train("mald-nerf-small", capture, output, flags=FAST_MALD_NERF, max_num_iterations=1)
    message = str(info.value)
    assert message.startswith("1 of 12 images of the capture cannot be used:")
    assert f"{damaged}: cannot be read as an image" in message and "Restore or replace these files" in message
    assert files_under(output) == []


def test_eval_modes_that_score_frames_with_the_object_stop_ns_train(object_removal_capture, tmp_path):
    from ns_diffusion_methods.errors import UserFacingError

    output = tmp_path / "outputs"
    with pytest.raises(UserFacingError, match="--eval-mode fraction: the frames it would pick still show the object"):
        harness.train("mald-nerf-small", object_removal_capture, output, flags=FAST_MALD_NERF, max_num_iterations=1,
                      dataparser=["object-mask-data", "--eval-mode", "fraction"])
    assert files_under(output) == []


def test_add_masks_errors_are_one_line_without_traceback(object_removal_capture, tmp_path):
    from failure_helpers import run_command

    missing = tmp_path / "no-such-masks"
    result = run_command("ns-diffusion", "add-masks", "--data", object_removal_capture, "--masks", missing,
                         "--output", tmp_path / "out")
    message = user_error(result)
    assert f"The mask folder {missing} does not exist" in message
    assert not (tmp_path / "out").exists()
