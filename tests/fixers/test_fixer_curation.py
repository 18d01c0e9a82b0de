"""Training pairs from a nerfstudio pipeline: renders vs. real images, nearest-pose references, Difix JSON."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.scene_box import SceneBox
from torch import nn

from ns_diffusion_methods.data.images import load_image, save_image
from ns_diffusion_methods.fixers.curation import nearest_cameras, render_pairs, write_pairs
from ns_diffusion_methods.fixers.training import read_pairs


def _rotation_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _poses(xs, angles=None) -> torch.Tensor:
    angles = angles or [0.0] * len(xs)
    return torch.stack([torch.cat([_rotation_z(a), torch.tensor([[x], [0.0], [0.0]])], dim=1)
                        for x, a in zip(xs, angles)])


def test_the_nearest_camera_by_translation_plus_rotation_angle_is_the_reference():
    # distances 0.5 (translation), 0.4 (rotation in radians), 0.45 (translation): the rotated camera is nearest
    query, pool = _poses([0.0], [0.0]), _poses([0.5, 0.0, -0.45], [0.0, 0.4, 0.0])
    assert nearest_cameras(query, pool).tolist() == [1]
    assert nearest_cameras(_poses([0.9, 2.2]), _poses([0.0, 1.0, 2.0, 3.0])).tolist() == [1, 2]
    pool = _poses([0.0, 1.0, 2.0, 3.0])
    assert nearest_cameras(pool, pool, exclude_same_index=True).tolist() == [1, 0, 1, 2]


def _dataset(folder, xs, seed):
    generator = torch.Generator().manual_seed(seed)
    files = []
    for i, _ in enumerate(xs):
        files.append(folder / f"frame_{seed}_{i}.png")
        save_image(torch.rand(3, 16, 24, generator=generator), files[-1])
    cameras = Cameras(camera_to_worlds=_poses(xs), fx=20.0, fy=20.0, cx=12.0, cy=8.0, width=24, height=16)
    outputs = DataparserOutputs(image_filenames=files, cameras=cameras,
                                scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])))
    return InputDataset(outputs)


class _DarkeningModel(nn.Module):
    """Renders each camera as its real image at half brightness (the 'artifact')."""

    def __init__(self, dataset: InputDataset) -> None:
        super().__init__()
        self.dataset = dataset
        self.weight = nn.Parameter(torch.zeros(1))

    def get_outputs_for_camera(self, camera: Cameras):
        positions = self.dataset.cameras.camera_to_worlds[:, 0, 3]
        index = int(torch.argmin((positions - camera.camera_to_worlds[0, 0, 3]).abs()))
        return {"rgb": self.dataset.get_image_float32(index) * 0.5}


def test_render_pairs_write_difix_json(tmp_path):
    train = _dataset(tmp_path, [0.0, 1.0, 2.0, 3.0], seed=0)
    evaluation = _dataset(tmp_path, [0.9, 2.2], seed=1)
    pipeline = SimpleNamespace(datamanager=SimpleNamespace(train_dataset=train, eval_dataset=evaluation),
                               model=_DarkeningModel(evaluation))
    index = write_pairs(render_pairs(pipeline, split="eval", prefix="run-"), tmp_path / "pairs", test_fraction=0.0)
    data = json.loads(index.read_text())
    assert sorted(data["train"]) == ["run-frame_1_0", "run-frame_1_1"] and data["test"] == {}
    records = {r.name: r for r in read_pairs(index, "train", prompt="remove degradation")}
    for i, ref in ((0, 1), (1, 2)):  # nearest training cameras of x = 0.9 and 2.2
        record = records[f"run-frame_1_{i}"]
        real = evaluation.get_image_float32(i).permute(2, 0, 1)
        torch.testing.assert_close(load_image(record.target), real, atol=1 / 255, rtol=0)
        torch.testing.assert_close(load_image(record.image), real * 0.5, atol=1 / 255, rtol=0)
        torch.testing.assert_close(load_image(record.reference), train.get_image_float32(ref).permute(2, 0, 1),
                                   atol=1 / 255, rtol=0)
    assert pipeline.model.training  # the model's mode is restored

    # training views of an under-fitted model: never the view itself as reference; runs merge into one folder
    pipeline.model = _DarkeningModel(train)
    write_pairs(render_pairs(pipeline, split="train", prefix="under-", max_images=2), tmp_path / "pairs",
                test_fraction=0.0)
    records = {r.name: r for r in read_pairs(index, "train")}
    assert len(records) == 4
    torch.testing.assert_close(load_image(records["under-frame_0_0"].reference),
                               train.get_image_float32(1).permute(2, 0, 1), atol=1 / 255, rtol=0)
