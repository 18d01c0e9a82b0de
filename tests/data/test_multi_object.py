"""The ``srn-data`` dataparser and the multi-object datamanager."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.data.multi_object import MultiObjectDataManagerConfig, rays_for_pixels
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig, resolve_input_views
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig

FOCAL, SIZE = 40.0, 32


def _look_at_opencv(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world (x right, y down, z forward) looking from ``position`` at ``target``."""
    z = target - position
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, position
    return c2w


def _write_srn_object(folder: Path, poses, size: int = SIZE, focal: float = FOCAL) -> None:
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    for i, pose in enumerate(poses):
        Image.fromarray(np.full((size, size, 3), 255, np.uint8)).save(folder / "rgb" / f"{i:06d}.png")
        (folder / "pose" / f"{i:06d}.txt").write_text(" ".join(f"{v:.10f}" for v in np.asarray(pose).reshape(-1)))
    (folder / "intrinsics.txt").write_text(f"{focal} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")


@pytest.fixture(scope="module")
def srn_known_camera(tmp_path_factory):
    """An SRN dataset in SRN units (objects in [-0.5, 0.5]^3, camera at distance 1.3), one known camera."""
    root = tmp_path_factory.mktemp("srn-known")
    pose = _look_at_opencv(np.array([0.9, -0.6, 0.7]), np.zeros(3), np.array([0.0, 0.0, 1.0]))
    for split in ("train", "test"):
        _write_srn_object(root / split / "obj_a", [pose, pose])
    return root, pose


def test_opencv_pose_renders_known_point_at_its_pixel(srn_known_camera):
    """A 3D point projected with the OpenCV pinhole model lands on the pixel where the imported nerfstudio camera
    renders it: the ray through that pixel passes through the point, and a small dense ball there is rendered at
    that pixel and nowhere else."""
    root, pose = srn_known_camera
    outputs = SRNDataParserConfig(data=root, radius=0.5).setup().get_dataparser_outputs("train")
    cameras = outputs.cameras

    # a point that projects exactly to the centre of pixel (row 9, column 21)
    row, col, depth = 9, 21, 1.1
    x_cam = np.array([(col + 0.5 - SIZE / 2) / FOCAL * depth, (row + 0.5 - SIZE / 2) / FOCAL * depth, depth])
    point_srn = pose[:3, :3] @ x_cam + pose[:3, 3]
    point = torch.tensor(point_srn / 0.5, dtype=torch.float32)  # the dataparser scales by 1 / radius

    bundle = rays_for_pixels(cameras, torch.tensor([[0, row, col]]))
    to_point = point - bundle.origins[0]
    distance_to_ray = torch.linalg.norm(torch.linalg.cross(to_point, bundle.directions[0]))
    assert float(distance_to_ray) < 1e-4
    assert float(to_point @ bundle.directions[0]) > 0  # in front of the camera

    # render a ball around the point (radius 0.02, less than a pixel's footprint of 0.055 at that depth)
    def ball(xyz, directions):
        inside = (xyz - point).norm(dim=-1) < 0.02
        return inside.float() * 50.0, torch.zeros(*xyz.shape[:-1], 3)

    renderer = BoxVolumeRendererConfig(num_samples=1024, num_importance_samples=0).setup()
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    indices = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    rays = rays_for_pixels(cameras, indices)
    out = renderer(ball, rays.origins[None], rays.directions[None])
    acc = out["accumulation"].reshape(SIZE, SIZE)
    assert divmod(int(acc.argmax()), SIZE) == (row, col)
    assert float(acc[row, col]) > 0.5
    assert float(acc.sum() - acc[row, col]) < 1e-6  # no other pixel sees the ball


def test_cameras_are_scaled_into_the_box(srn_known_camera):
    root, pose = srn_known_camera
    outputs = SRNDataParserConfig(data=root, radius=0.5).setup().get_dataparser_outputs("train")
    assert torch.allclose(outputs.cameras.camera_to_worlds[0, :3, 3], torch.tensor(pose[:3, 3] / 0.5).float(),
                          atol=1e-6)
    assert outputs.dataparser_scale == pytest.approx(2.0)
    with pytest.raises(DataError, match="inside the scene box"):
        SRNDataParserConfig(data=root, radius=2.0).setup().get_dataparser_outputs("train")


def test_missing_split_folder_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="test"):
        SRNDataParserConfig(data=tmp_path, radius=0.5).setup().get_dataparser_outputs("test")


def test_input_views_follow_the_paper_where_the_views_exist():
    assert resolve_input_views((64,), 251, 1) == [64]
    assert resolve_input_views((64, 104), 251, 2) == [64, 104]
    # not enough views: spread evenly (view 0; two opposite views)
    assert resolve_input_views((64,), 24, 1) == [0]
    assert resolve_input_views((64, 104), 24, 2) == [0, 12]
    with pytest.raises(DataError):
        resolve_input_views((0,), 1, 1)


@pytest.fixture(scope="module")
def datamanager(objects_dataset):
    config = MultiObjectDataManagerConfig(dataparser=SRNDataParserConfig(data=objects_dataset),
                                          objects_per_batch=3, rays_per_object=50, images_per_batch=4)
    return config.setup(device="cpu", test_mode="val")


def test_synthetic_objects_are_read_in_box_units(datamanager):
    # ns-diffusion-synth writes cameras at distance 2.6 in box units: radius 1 is detected from meta.json
    distances = datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, 2.6), atol=1e-3)
    assert datamanager.num_train_objects == 8 and datamanager.num_eval_objects == 2


def test_ray_batches_belong_to_their_objects(datamanager):
    bundle, batch = datamanager.next_train(0)
    objects, R = batch["object_indices"], batch["rays_per_object"]
    assert objects.shape == (3,) and len(set(objects.tolist())) == 3
    assert bundle.shape == (3 * R,) and batch["image"].shape == (3 * R, 3)
    image_ids, rows, cols = batch["indices"].unbind(-1)
    # every ray of slot b comes from a view of object objects[b]
    owners = datamanager.object_of_image[image_ids].reshape(3, R)
    assert torch.equal(owners, objects[:, None].expand(3, R))
    # targets are the stored pixels, origins the camera centres of those views
    expected = datamanager.train_images[image_ids, rows, cols].float() / 255.0
    assert torch.equal(batch["image"], expected)
    centres = datamanager.train_dataset.cameras.camera_to_worlds[image_ids, :3, 3]
    assert torch.allclose(bundle.origins, centres, atol=1e-5)
    assert torch.equal(batch["num_views"], torch.full((3,), 8.0))


def test_objects_are_visited_evenly(datamanager):
    counts = torch.zeros(datamanager.num_train_objects)
    for step in range(8):  # 8 batches x 3 objects = 3 passes over 8 objects
        counts[datamanager.next_objects()] += 1
    assert counts.min() >= 2 and counts.max() <= 4


def test_image_mode_returns_whole_images_with_cameras(datamanager):
    datamanager.config.mode = "images"
    try:
        cameras, batch = datamanager.next_train(1)
    finally:
        datamanager.config.mode = "rays"
    assert cameras.shape == (4,) and batch["image"].shape == (4, 32, 32, 3)
    ids = batch["image_indices"]
    assert torch.equal(batch["object_indices"], datamanager.object_of_image[ids])
    assert torch.equal(batch["image"], datamanager.train_images[ids].float() / 255.0)


def test_held_out_objects_have_input_and_scored_views(datamanager):
    obj = datamanager.eval_object(1, num_inputs=2)
    assert obj.images.shape == (12, 32, 32, 3) and obj.cameras.shape == (12,)
    assert obj.input_views == [0, 6]  # 12 views: the paper's views 64/104 do not exist
    assert obj.scored_views == [v for v in range(12) if v not in (0, 6)]
    assert datamanager.eval_input_views(1) == [[0], [0]]
    # the eval split is what ns-eval iterates
    camera, data = datamanager.fixed_indices_eval_dataloader[13]
    assert camera.shape == (1,) and data["object_index"] == 1 and data["image"].shape == (32, 32, 3)
    assert len(datamanager.fixed_indices_eval_dataloader) == 24


def test_explicit_input_views(objects_dataset):
    config = MultiObjectDataManagerConfig(dataparser=SRNDataParserConfig(data=objects_dataset, input_views_1v=(5,),
                                                                         input_views_2v=(2, 9)))
    dm = config.setup(device="cpu", test_mode="test")
    assert dm.eval_input_views(1) == [[5], [5]]
    assert dm.eval_object(0, 2).input_views == [2, 9]
