"""SRN data as PixelNeRF distributes it: ``srn_cars/cars_{train,val,test}`` and the nested
``srn_chairs/chairs_train/chairs_2.0_train``. The reader, the ``srn-data`` dataparser and ``ns-train`` find the
splits without flags; explicit split flags still work; a root without split folders is a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import harness
import numpy as np
import pytest
import torch
from methods.renderdiffusion.conftest import TINY_FLAGS as RENDERDIFFUSION_TINY_FLAGS
from methods.ssdnerf.test_ssdnerf_end_to_end import TINY_FLAGS as SSDNERF_TINY_FLAGS
from PIL import Image

from ns_diffusion_methods.data.srn import find_split_folders, read_srn_split
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig
from ns_diffusion_methods.errors import DataError


def _names(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def test_reader_finds_the_flat_and_the_nested_split_folders(srn_cars, srn_chairs):
    assert find_split_folders(srn_cars) == {"train": srn_cars / "cars_train", "val": srn_cars / "cars_val",
                                            "test": srn_cars / "cars_test"}
    assert find_split_folders(srn_chairs) == {"train": srn_chairs / "chairs_train" / "chairs_2.0_train",
                                              "val": srn_chairs / "chairs_val" / "chairs_2.0_val",
                                              "test": srn_chairs / "chairs_test" / "chairs_2.0_test"}
    # a nested split reads the same whether named by its outer folder or by its full path
    nested = srn_chairs / "chairs_train" / "chairs_2.0_train"
    for split in ("chairs_train", "chairs_train/chairs_2.0_train"):
        objects = read_srn_split(srn_chairs, split)
        assert [obj.name for obj in objects] == _names(nested)
        assert len(objects) == 3 and all(obj.num_views == 3 for obj in objects)
    first = read_srn_split(srn_chairs, "chairs_train", max_objects=1)
    assert len(first) == 1
    png = np.asarray(Image.open(nested / first[0].name / "rgb" / "000001.png").convert("RGB"))
    assert np.array_equal(first[0].images[1], png)


@pytest.mark.parametrize("layout", ["srn_cars", "srn_chairs"])
def test_dataparser_reads_the_splits_without_flags(layout, request):
    root = request.getfixturevalue(layout)
    splits = find_split_folders(root)
    parser = SRNDataParserConfig(data=root).setup()
    train = parser.get_dataparser_outputs("train")
    assert train.metadata["object_names"] == _names(splits["train"])
    assert all(str(path).startswith(str(splits["train"]) + "/") and path.is_file() for path in train.image_filenames)
    # SRN units (cameras 1.3 from the origin), no meta.json: radius 0.5 puts the cameras at 2.6 box units
    distances = train.cameras.camera_to_worlds[:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, 2.6), atol=1e-3)
    # the images are the files of the nested folder, in the dataset's order
    image = np.asarray(Image.open(train.image_filenames[4]).convert("RGB"))
    assert np.array_equal(parser.images("train")[4].numpy(), image)
    # held-out objects: the test folder (not val), for nerfstudio's val and test splits
    for split in ("val", "test"):
        held_out = parser.get_dataparser_outputs(split)
        assert held_out.metadata["object_names"] == _names(splits["test"]) and len(_names(splits["test"])) == 2
        assert all(str(path).startswith(str(splits["test"]) + "/") for path in held_out.image_filenames)
    assert parser.split_folder("test") == splits["test"]


def test_explicit_split_flags_still_work(srn_cars, srn_chairs, objects_dataset):
    # the val folder as held-out objects, named explicitly
    outputs = SRNDataParserConfig(data=srn_cars, eval_split="cars_val").setup().get_dataparser_outputs("test")
    assert outputs.metadata["object_names"] == _names(srn_cars / "cars_val")
    # a nested split named by its outer folder or by its full path (the inner folder is where the objects are)
    for name in ("chairs_test", "chairs_test/chairs_2.0_test"):
        parser = SRNDataParserConfig(data=srn_chairs, train_split="chairs_val", eval_split=name).setup()
        assert parser.get_dataparser_outputs("train").metadata["object_names"] == \
            _names(srn_chairs / "chairs_val" / "chairs_2.0_val")
        held_out = parser.get_dataparser_outputs("test")
        assert held_out.image_filenames[0].parent.parent.parent == srn_chairs / "chairs_test" / "chairs_2.0_test"
    # the names the package used to require
    parser = SRNDataParserConfig(data=objects_dataset, train_split="train", eval_split="test").setup()
    assert parser.get_dataparser_outputs("train").metadata["num_objects"] == 8
    with pytest.raises(DataError, match=r"cars_holdout does not exist.*cars_test.*--eval-split"):
        SRNDataParserConfig(data=srn_cars, eval_split="cars_holdout").setup().get_dataparser_outputs("test")


def test_a_root_without_split_folders_is_a_clear_error(srn_source, tmp_path):
    root = tmp_path / "renders"
    shutil.copytree(srn_source / "train", root / "objects")
    (root / "previews").mkdir()
    with pytest.raises(DataError) as info:
        SRNDataParserConfig(data=root).setup().get_dataparser_outputs("train")
    message = str(info.value)
    assert f"No train split folder in the SRN dataset root {root}" in message
    assert "['objects', 'previews']" in message  # the folders it found
    assert "cars_train" in message and "chairs_train/chairs_2.0_train" in message  # what it expected
    assert "--train-split" in message

    # --data pointed at a split folder itself
    with pytest.raises(DataError, match=r"itself holds object folders.*folder above it"):
        SRNDataParserConfig(data=srn_source / "train").setup().get_dataparser_outputs("train")

    # only a val folder: the held-out split uses it, the training split is missing
    only_val = tmp_path / "only_val"
    shutil.copytree(srn_source / "test", only_val / "cars_val")
    parser = SRNDataParserConfig(data=only_val).setup()
    assert parser.split_folder("test") == only_val / "cars_val"
    with pytest.raises(DataError, match=r"No train split folder .*\['cars_val'\]"):
        parser.get_dataparser_outputs("train")

    # two folders for one split
    both = tmp_path / "both"
    shutil.copytree(srn_source / "train", both / "train")
    shutil.copytree(srn_source / "train", both / "cars_train")
    with pytest.raises(DataError, match=r"two train split folders"):
        SRNDataParserConfig(data=both).setup().get_dataparser_outputs("train")

    with pytest.raises(DataError, match=r"does not exist or is not a folder"):
        SRNDataParserConfig(data=tmp_path / "missing").setup().get_dataparser_outputs("train")


#: the methods' tiny test presets, without evaluation during training
NO_EVAL = ["--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-save", "100"]
SSDNERF_TINY = [*SSDNERF_TINY_FLAGS, *NO_EVAL]
RENDERDIFFUSION_TINY = [*RENDERDIFFUSION_TINY_FLAGS, *NO_EVAL]


@pytest.mark.parametrize("method, flags, layout", [("ssdnerf-small", SSDNERF_TINY, "srn_chairs"),
                                                   ("renderdiffusion-small", RENDERDIFFUSION_TINY, "srn_cars")])
def test_ns_train_on_the_distributed_layouts(method, flags, layout, request, tmp_path):
    """``ns-train METHOD --data srn_chairs`` (or ``srn_cars``): no split or radius flag."""
    root = request.getfixturevalue(layout)
    config_path = harness.train(method, root, tmp_path, flags=flags, max_num_iterations=2)
    checkpoint = torch.load(harness.latest_checkpoint(config_path), map_location="cpu", weights_only=False)
    assert checkpoint["step"] == 1

    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    datamanager = pipeline.datamanager
    splits = find_split_folders(root)
    assert datamanager.train_dataset.metadata["object_names"] == _names(splits["train"])
    assert datamanager.eval_dataset.metadata["object_names"] == _names(splits["test"])
    distances = datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3].norm(dim=-1)
    assert torch.allclose(distances, torch.full_like(distances, 2.6), atol=1e-3)  # auto radius 0.5
