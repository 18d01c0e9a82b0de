"""The presets' data settings: the dataparser's radius (auto-detected unless set), the paper's 64x64 images, and the
error, before training, when the data does not fit the triplane box."""

from __future__ import annotations

import copy
from pathlib import Path

import harness
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.methods.renderdiffusion.config import renderdiffusion, renderdiffusion_small


def test_presets_take_the_radius_from_the_data_and_the_paper_preset_trains_at_64_pixels():
    paper = renderdiffusion.config.pipeline.datamanager.dataparser
    small = renderdiffusion_small.config.pipeline.datamanager.dataparser
    assert paper.radius is None and small.radius is None  # auto-detected by srn-data
    assert paper.image_size == 64  # the paper's resolution (SRN ships 128x128)
    assert small.image_size == -1  # the dataset's own size
    loaded = yaml.load(yaml.dump(renderdiffusion.config), Loader=yaml.Loader).pipeline.datamanager.dataparser
    assert loaded.radius is None and loaded.image_size == 64
    # the triplane box is the dataparser's scene box
    assert renderdiffusion.config.pipeline.model.renderer.bound == paper.scene_bound


@pytest.fixture(scope="module")
def floor_objects_128(tmp_path_factory) -> Path:
    """Floor-background objects at SRN's 128x128, written in box units (meta.json: radius 1)."""
    from ns_diffusion_methods.synthetic import write_objects

    return write_objects(tmp_path_factory.mktemp("captures") / "objects-floor-128", seed=2, image_size=128,
                         num_train=2, num_test=1, views=(2, 2), background="floor", max_primitives=1)


def test_paper_preset_loads_radius_one_data_at_its_scale_and_64_pixels(floor_objects_128):
    config = copy.deepcopy(renderdiffusion.config.pipeline.datamanager)
    config.data = floor_objects_128
    datamanager = config.setup(device="cpu", test_mode="test")
    cameras = datamanager.train_dataset.cameras
    distances = cameras.camera_to_worlds[:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, 2.6), atol=1e-3)  # radius 1: not rescaled
    assert datamanager.train_images.shape == (4, 64, 64, 3)
    assert datamanager.eval_dataset.images.shape == (2, 64, 64, 3)
    focal = 1.025 * 128
    assert torch.allclose(cameras.fx, torch.full_like(cameras.fx, focal / 2))
    assert torch.allclose(cameras.cx, torch.full_like(cameras.cx, 32.0))
    assert (int(cameras.height[0]), int(cameras.width[0])) == (64, 64)
    png = np.array(Image.open(datamanager.train_dataset.image_filenames[1]).convert("RGB"), dtype=np.float64)
    expected = np.round(png.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3)))  # the mean of each 2x2 block
    assert np.array_equal(datamanager.train_images[1].numpy(), expected.astype(np.uint8))

    # the radius the preset used to hard-code doubles this scene: the floor leaves the box, and loading stops
    config = copy.deepcopy(renderdiffusion.config.pipeline.datamanager)
    config.data = floor_objects_128
    config.dataparser.radius = 0.5
    with pytest.raises(DataError, match=r"does not fit the scene box \[-1, 1\]\^3 .*radius 0\.5 \(set with "
                                        r"--radius\).*srn-data --radius R"):
        config.setup(device="cpu", test_mode="test")


def test_ns_train_stops_before_training_when_the_data_leaves_the_box(floor_objects, tmp_path):
    with pytest.raises(DataError) as info:
        harness.train("renderdiffusion-small", floor_objects, tmp_path / "outputs", max_num_iterations=1,
                      dataparser=["srn-data", "--radius", "0.5"])
    message = str(info.value)
    assert str(floor_objects / "train") in message and "does not fit the scene box" in message
    assert "srn-data --radius R" in message
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]  # nothing left that looks like a run
