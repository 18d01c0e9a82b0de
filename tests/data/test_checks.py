"""The up-front image check decodes every image: JPEGs cut short or with broken scan data are found before training."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ns_diffusion_methods.data.checks import check_image_files, image_problem
from ns_diffusion_methods.errors import DataError


def _jpeg_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    smooth = np.asarray(Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((64, 48)))
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def truncated(data: bytes) -> bytes:
    """The first half of a file: an interrupted copy or download."""
    return data[: len(data) // 2]


def broken_scan(data: bytes) -> bytes:
    """A JPEG whose entropy-coded scan data is broken halfway by a stray marker segment (bytes overwritten, the
    length unchanged); headers and the end marker are intact."""
    start = data.index(b"\xff\xda")  # start of scan
    scan = start + 2 + int.from_bytes(data[start + 2:start + 4], "big")
    middle = scan + (len(data) - 2 - scan) // 2
    return data[:middle] + b"\xff\xc4\x00\x10" + data[middle + 4:]


def _verify_passes(path: Path) -> bool:
    with Image.open(path) as image:
        image.verify()  # PIL's header/structure check: raises on what it finds
    return True


def test_damaged_jpegs_are_found_by_decoding_them(tmp_path):
    data = _jpeg_bytes()
    good, half, broken = tmp_path / "good.jpg", tmp_path / "half.jpg", tmp_path / "broken.jpg"
    good.write_bytes(data)
    half.write_bytes(truncated(data))
    broken.write_bytes(broken_scan(data))
    assert len(broken.read_bytes()) == len(data)
    # what a header/structure check sees: nothing wrong with either damaged file
    assert _verify_passes(half) and _verify_passes(broken)
    assert image_problem(good) is None
    assert "cannot be read as an image" in image_problem(half) and "truncated" in image_problem(half)
    assert "cannot be read as an image" in image_problem(broken)


def test_check_image_files_names_every_bad_file_in_order(tmp_path):
    paths = []
    for index in range(5):
        path = tmp_path / f"frame_{index + 1:05d}.jpg"
        path.write_bytes(_jpeg_bytes(index))
        paths.append(path)
    paths[1].write_bytes(truncated(paths[1].read_bytes()))
    paths[3].write_bytes(broken_scan(paths[3].read_bytes()))
    png = tmp_path / "frame_00006.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(png)
    png.write_bytes(truncated(png.read_bytes()))
    paths += [png, tmp_path / "frame_00007.jpg"]  # the last one does not exist
    with pytest.raises(DataError) as info:
        check_image_files(paths, hint="Replace them.")
    message = str(info.value)
    assert message.startswith("4 of 7 images of the capture cannot be used:")
    lines = message.splitlines()[1:5]
    assert [line.split(": ")[0] for line in lines] == [f"  - {p}" for p in (paths[1], paths[3], png, paths[6])]
    assert lines[3].endswith("does not exist") and message.endswith("Replace them.")
    check_image_files([paths[0], paths[2], paths[4]], hint="")  # the intact ones pass


def test_truncated_files_are_found_even_where_pil_is_told_to_load_them(tmp_path, monkeypatch):
    path = tmp_path / "half.jpg"
    path.write_bytes(truncated(_jpeg_bytes()))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # some libraries set this process-wide
    with pytest.raises(DataError, match="half.jpg"):
        check_image_files([path], hint="")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for the rest of the process
