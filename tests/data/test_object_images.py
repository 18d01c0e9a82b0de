"""Multi-object images at scale: the parallel decode into one tensor equals the per-object reader, and the held-out
split is decoded object by object only when evaluation asks for it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.data.images import resize_views
from ns_diffusion_methods.data.multi_object import MultiObjectDataManagerConfig
from ns_diffusion_methods.data.object_images import LazyObjectImages, load_object_images
from ns_diffusion_methods.data.srn import list_srn_objects, read_srn_objects
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig
from ns_diffusion_methods.errors import DataError


@pytest.fixture(scope="module")
def reference(objects_dataset):
    """The training objects read one by one, images concatenated (the reader the loader must agree with)."""
    objects = read_srn_objects(objects_dataset / "train")
    return torch.from_numpy(np.concatenate([obj.images for obj in objects]))


@pytest.fixture
def processes_for_any_size(monkeypatch):
    """Use the process pool even for the 8 objects of the test dataset."""
    from ns_diffusion_methods.data import srn

    monkeypatch.setattr(srn, "MIN_OBJECTS_FOR_PROCESSES", 1)


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_decode_equals_the_object_reader(objects_dataset, reference, workers, processes_for_any_size):
    objects = list_srn_objects(objects_dataset / "train", workers=workers)
    images = load_object_images(objects, (32, 32), workers=workers)
    assert images.dtype == torch.uint8 and images.shape == reference.shape
    assert torch.equal(images, reference)
    # resized on the way, view for view as the area filter gives for the whole stack
    small = load_object_images(objects, (16, 16), workers=workers)
    assert torch.equal(small, resize_views(reference, 16, 16))


def test_a_broken_file_stops_the_parallel_decode_with_its_name(objects_dataset, tmp_path, processes_for_any_size):
    data = tmp_path / "objects"
    shutil.copytree(objects_dataset, data)
    broken = sorted((data / "train").iterdir())[5] / "rgb"
    victim = sorted(broken.iterdir())[2]
    victim.write_bytes(b"not a png")
    objects = list_srn_objects(data / "train", workers=2)  # listing reads no pixels: no error yet
    with pytest.raises(DataError, match=victim.name):
        load_object_images(objects, (32, 32), workers=2)
    Image.new("RGB", (20, 20)).save(victim)  # readable, but not the size intrinsics.txt declares
    with pytest.raises(DataError, match="declares 32x32"):
        load_object_images(objects, (32, 32), workers=2)


def test_lazy_images_index_like_the_tensor_and_decode_only_what_is_asked(objects_dataset, reference):
    objects = list_srn_objects(objects_dataset / "train")
    lazy = LazyObjectImages(objects, (32, 32), cache_objects=2)
    assert lazy.shape == reference.shape and len(lazy) == reference.shape[0] and lazy.decoded_objects == 0
    assert torch.equal(lazy[9], reference[9])  # view 1 of object 1
    assert lazy.decoded_objects == 1
    views = torch.tensor([0, 17, 3, 63, 8])
    assert torch.equal(lazy[views], reference[views])
    assert torch.equal(lazy[-1], reference[-1])
    assert torch.equal(lazy[10:20:3], reference[10:20:3])
    rows, cols = torch.tensor([0, 5, 31, 7, 2]), torch.tensor([31, 0, 4, 7, 9])
    assert torch.equal(lazy[views, rows, cols], reference[views, rows, cols])
    with pytest.raises(IndexError):
        lazy[reference.shape[0]]
    # the cache keeps the 2 most recently used objects: object 7 is decoded again after two others
    before = lazy.decoded_objects
    lazy[63], lazy[0], lazy[8], lazy[63]
    assert lazy.decoded_objects == before + 3


def test_the_datamanager_decodes_held_out_objects_only_when_asked(objects_dataset):
    config = MultiObjectDataManagerConfig(dataparser=SRNDataParserConfig(data=objects_dataset, load_workers=2,
                                                                         eval_cache_objects=1))
    dm = config.setup(device="cpu", test_mode="val")
    eager = torch.from_numpy(np.concatenate([obj.images for obj in read_srn_objects(objects_dataset / "test")]))
    images = dm.eval_dataset.images
    assert isinstance(images, LazyObjectImages) and images.decoded_objects == 0
    assert isinstance(dm.train_images, torch.Tensor)  # the training split is decoded up front
    obj = dm.eval_object(1, num_inputs=1)
    assert images.decoded_objects == 1
    start = int(images.offsets[1])
    assert torch.equal((obj.images * 255).round().to(torch.uint8), eager[start: start + obj.images.shape[0]])
    _, batch = dm.sample_rays(torch.tensor([1]), 64, split="eval")
    i, r, c = batch["indices"].unbind(-1)
    assert torch.allclose(batch["image"], eager[i, r, c].float() / 255.0)
    assert images.decoded_objects == 1  # object 1 was still cached
    camera, item = dm.fixed_indices_eval_dataloader[0]  # ns-eval's path: object 0
    assert torch.allclose(item["image"], eager[0].float() / 255.0) and images.decoded_objects == 2


def test_worker_and_cache_settings_are_checked(objects_dataset):
    for flags, message in (({"load_workers": 0}, "load-workers"), ({"eval_cache_objects": 0}, "eval-cache-objects")):
        config = MultiObjectDataManagerConfig(dataparser=SRNDataParserConfig(data=objects_dataset, **flags))
        with pytest.raises(DataError, match=message):
            config.setup(device="cpu", test_mode="val")
