"""``srn-data``'s scale: the radius (auto-detected or set), the check that cameras and content fit the scene box, and
the ``image_size`` option (images resized by area averaging, intrinsics scaled with them)."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.data.images import resize_views
from ns_diffusion_methods.data.srn_dataparser import (
    SRNDataParserConfig,
    background_colour,
    content_reach,
    ray_reach,
)
from ns_diffusion_methods.errors import DataError


def test_ray_reach_is_the_closest_approach_in_the_max_norm():
    generator = torch.Generator().manual_seed(0)
    origins = torch.randn(64, 3, generator=generator, dtype=torch.float64) * 3
    directions = torch.randn(64, 3, generator=generator, dtype=torch.float64)
    directions[:5, 0] = 0.0  # rays parallel to a face too
    directions = directions / directions.norm(dim=-1, keepdim=True)
    # unit directions, |origin| < 20: the closest approach lies at t < 40; sampled every 0.001
    assert float(origins.norm(dim=-1).max()) < 20
    t = torch.linspace(0, 40, 40_001, dtype=torch.float64)
    points = origins[:, None] + t[None, :, None] * directions[:, None]
    brute = points.abs().amax(dim=-1).amin(dim=-1)
    assert torch.allclose(ray_reach(origins, directions), brute, atol=1e-3, rtol=0)
    # a ray meets the box [-1, 1]^3 exactly when its reach is <= 1
    assert float(ray_reach(torch.tensor([0.0, -3.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))) == 0.0
    assert float(ray_reach(torch.tensor([1.5, -3.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))) == pytest.approx(1.5)
    assert float(ray_reach(torch.tensor([0.0, 3.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))) == pytest.approx(3.0)


def test_background_colour_is_the_border_colour_or_none():
    images = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    images[:, 2:6, 2:6] = 40
    assert background_colour(images).tolist() == [255, 255, 255]
    images[:, 0, :] = torch.tensor([128, 128, 128], dtype=torch.uint8)  # a different top row: still mostly white
    assert background_colour(images).tolist() == [255, 255, 255]
    noise = torch.randint(0, 256, (2, 8, 8, 3), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    assert background_colour(noise) is None  # no background to tell the content from: nothing is measured
    assert content_reach(noise, torch.eye(4)[None].expand(2, 4, 4), torch.tensor([[8.0, 8, 4, 4]] * 2), 1.0) \
        .num_foreground == 0


def _look_at_opencv(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    position, target, up = (np.asarray(v, dtype=np.float64) for v in (position, target, up))
    z = (target - position) / np.linalg.norm(target - position)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, np.cross(z, x), z, position
    return c2w


def _write_dot_object(folder: Path, point, size: int = 32, focal: float = 12.0) -> None:
    """One white view from (0, -2.6, 0) looking at the origin, with a dark 2x2 dot where ``point`` projects."""
    pose = _look_at_opencv((0.0, -2.6, 0.0))
    x_cam = pose[:3, :3].T @ (np.asarray(point) - pose[:3, 3])
    col, row = size / 2 + focal * x_cam[0] / x_cam[2], size / 2 + focal * x_cam[1] / x_cam[2]
    assert 1 <= col < size - 1 and 1 <= row < size - 1
    image = np.full((size, size, 3), 255, np.uint8)
    image[int(row) - 1: int(row) + 1, int(col) - 1: int(col) + 1] = 30
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    Image.fromarray(image).save(folder / "rgb" / "000000.png")
    (folder / "pose" / "000000.txt").write_text(" ".join(repr(float(v)) for v in pose.reshape(-1)))
    (folder / "intrinsics.txt").write_text(f"{focal} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")


def test_content_outside_the_box_stops_loading_with_the_radius_to_use(tmp_path):
    # a dot at (3, 0, 0): its ray passes 1.39 box units (max norm) from the centre, so it cannot lie in [-1, 1]^3
    _write_dot_object(tmp_path / "far" / "train" / "obj", (3.0, 0.0, 0.0))
    with pytest.raises(DataError) as info:
        SRNDataParserConfig(data=tmp_path / "far", radius=1.0).setup().get_dataparser_outputs("train")
    message = str(info.value)
    assert f"What the images of {tmp_path / 'far' / 'train' / 'obj'} show does not fit the scene box" in message
    assert "4 of its 4 foreground pixels" in message and "000000.png" in message
    reach = float(message.split("reaches at least ")[1].split(" ")[0])
    assert reach == pytest.approx(3 * 2.6 / 5.6, abs=0.05)  # 1.39: where x = 3 t and y = -2.6 (1 - t) meet
    assert f"Set a radius of at least {reach:.3g}" in message and "srn-data --radius R" in message
    assert "srn-data --check-objects 0" in message
    # with that radius it loads; so does the dot at (0.5, 0, 0), inside the box; and the check can be skipped
    SRNDataParserConfig(data=tmp_path / "far", radius=1.45).setup().get_dataparser_outputs("train")
    SRNDataParserConfig(data=tmp_path / "far", radius=1.0, check_objects=0).setup().get_dataparser_outputs("train")
    _write_dot_object(tmp_path / "near" / "train" / "obj", (0.5, 0.0, 0.0))
    SRNDataParserConfig(data=tmp_path / "near", radius=1.0).setup().get_dataparser_outputs("train")


@pytest.fixture(scope="module")
def floor_dataset(tmp_path_factory) -> Path:
    """RenderDiffusion-style objects (floor disc of radius 0.9, grey backdrop) in box units (meta.json: radius 1)."""
    from ns_diffusion_methods.synthetic import write_objects

    return write_objects(tmp_path_factory.mktemp("floor") / "objects", seed=1, image_size=16, num_train=2,
                         num_test=1, views=(3, 3), background="floor", max_primitives=1)


def test_radius_comes_from_the_data_unless_set(floor_dataset, srn_cars):
    # ns-diffusion-synth data (meta.json): radius 1, cameras stay 2.6 from the origin
    outputs = SRNDataParserConfig(data=floor_dataset).setup().get_dataparser_outputs("train")
    assert outputs.dataparser_scale == pytest.approx(1.0)
    distances = outputs.cameras.camera_to_worlds[:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, 2.6), atol=1e-3)
    # twice that scale: the floor (radius 0.9) reaches 1.8, outside the box; the message names the fitting range
    with pytest.raises(DataError) as info:
        SRNDataParserConfig(data=floor_dataset, radius=0.5).setup().get_dataparser_outputs("train")
    message = str(info.value)
    assert "radius 0.5 (set with --radius)" in message and "does not fit the scene box [-1, 1]^3" in message
    assert "border colour (128, 128, 128)" in message  # the grey backdrop is the background, the floor is content
    low, high = (float(v) for v in re.search(r"at least ([\d.]+) \(and below ([\d.]+),", message).groups())
    assert 0.5 < low <= 1.0 < high  # the lower bound is what the rays prove; the data was written with radius 1
    # SRN units (cameras at 1.3, no meta.json): 0.5 is detected; radius 1 puts the cameras inside the box
    parser = SRNDataParserConfig(data=srn_cars).setup()
    assert parser.radius() == 0.5
    with pytest.raises(DataError, match=r"radius 1 \(set with --radius\), \d+ cameras of .*cars_train lie inside the "
                                        r"scene box .*set a radius below 0\.\d+ with `ns-train METHOD --data "):
        SRNDataParserConfig(data=srn_cars, radius=1.0).setup().get_dataparser_outputs("train")


def test_resize_averages_pixel_blocks():
    images = torch.randint(0, 256, (2, 8, 6, 3), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
    small = resize_views(images, 4, 3)
    expected = images.float().reshape(2, 4, 2, 3, 2, 3).mean(dim=(2, 4)).round().to(torch.uint8)
    assert torch.equal(small, expected)
    assert resize_views(images, 16, 12).shape == (2, 16, 12, 3)


def test_image_size_resizes_images_and_scales_intrinsics(objects_dataset, tmp_path):
    full = SRNDataParserConfig(data=objects_dataset).setup()
    half = SRNDataParserConfig(data=objects_dataset, image_size=16).setup()
    for split in ("train", "test"):
        a, b = full.get_dataparser_outputs(split), half.get_dataparser_outputs(split)
        assert full.images(split).shape[1:] == (32, 32, 3) and half.images(split).shape[1:] == (16, 16, 3)
        assert (int(b.cameras.height[0]), int(b.cameras.width[0])) == (16, 16)
        for name in ("fx", "fy", "cx", "cy"):
            assert torch.allclose(getattr(b.cameras, name), getattr(a.cameras, name) / 2)
        assert torch.equal(b.cameras.camera_to_worlds, a.cameras.camera_to_worlds)
        # each pixel is the mean of a 2x2 block of the file
        png = torch.from_numpy(np.array(Image.open(a.image_filenames[3]).convert("RGB")))
        assert torch.equal(half.images(split)[3], png.float().reshape(16, 2, 16, 2, 3).mean(dim=(1, 3)).round()
                           .to(torch.uint8))
    # the same ray through the same point of the image, in either pixel grid (pixel centres at half-integers)
    with warnings.catch_warnings():  # nerfstudio 1.1.5 indexes with a list (a torch deprecation warning)
        warnings.simplefilter("ignore", UserWarning)
        rays_a = a.cameras.generate_rays(camera_indices=torch.tensor([[0]]), coords=torch.tensor([[17.0, 9.0]]))
        rays_b = b.cameras.generate_rays(camera_indices=torch.tensor([[0]]), coords=torch.tensor([[8.5, 4.5]]))
    assert torch.allclose(rays_a.origins, rays_b.origins) and torch.allclose(rays_a.directions, rays_b.directions)

    # non-square images keep their aspect ratio: the longer side gets image_size
    wide = tmp_path / "wide"
    shutil.copytree(objects_dataset, wide)
    for obj in (wide / "train").iterdir():
        for png_path in (obj / "rgb").iterdir():
            Image.open(png_path).crop((0, 8, 32, 24)).save(png_path)  # 32 wide, 16 high
        (obj / "intrinsics.txt").write_text("32.8 16 8 0\n0 0 0\n1\n16 32\n")
    parser = SRNDataParserConfig(data=wide, image_size=8, check_objects=0).setup()
    outputs = parser.get_dataparser_outputs("train")
    assert parser.images("train").shape[1:] == (4, 8, 3)
    assert (float(outputs.cameras.fx[0]), float(outputs.cameras.cx[0]), float(outputs.cameras.cy[0])) == \
        pytest.approx((8.2, 4.0, 2.0))
    with pytest.raises(DataError, match="image_size"):
        SRNDataParserConfig(data=objects_dataset, image_size=0).setup().get_dataparser_outputs("train")
