"""SRN datasets laid out as PixelNeRF distributes them, made from the package's synthetic objects.

``srn_cars``: ``cars_train/``, ``cars_val/``, ``cars_test/`` directly under the root. ``srn_chairs``: each split
nested one level down, ``chairs_train/chairs_2.0_train/`` etc. Both are in SRN units (camera translations halved:
cameras 1.3 from the origin, as SRN cars) and have no ``meta.json``, like the real download, so the dataparser's
radius is auto-detected as SRN's 0.5.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest


def to_srn_units(root: Path) -> None:
    """Halve the camera translations of every pose file below ``root`` (box units -> SRN units)."""
    for pose_file in root.rglob("pose/*.txt"):
        pose = np.array([float(v) for v in pose_file.read_text().split()]).reshape(4, 4)
        pose[:3, 3] *= 0.5
        pose_file.write_text(" ".join(repr(float(v)) for v in pose.reshape(-1)) + "\n")


@pytest.fixture(scope="session")
def srn_source(tmp_path_factory) -> Path:
    """Synthetic objects in the ``train/``/``test/`` layout (16 px, white background, 3 + 2 objects, 3/4 views)."""
    from ns_diffusion_methods.synthetic import write_objects

    return write_objects(tmp_path_factory.mktemp("srn-source") / "objects", seed=3, image_size=16,
                         num_train=3, num_test=2, views=(3, 4))


def _object_names(split_dir: Path) -> list:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def _srn_layout(source: Path, root: Path, folders: Dict[str, str]) -> Path:
    """Copy ``source``'s splits to ``root/<folders[split]>`` (``val`` gets the first training object), without the
    synthetic dataset's ``meta.json``/``capture.json``, in SRN units."""
    for split, relative in folders.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if split == "val":
            first = _object_names(source / "train")[0]
            shutil.copytree(source / "train" / first, target / f"val_{first}")
        else:
            shutil.copytree(source / split, target)
    to_srn_units(root)
    return root


@pytest.fixture(scope="session")
def srn_cars(srn_source, tmp_path_factory) -> Path:
    """``srn_cars/{cars_train,cars_val,cars_test}/<object>/...`` (PixelNeRF's flat layout)."""
    return _srn_layout(srn_source, tmp_path_factory.mktemp("layouts") / "srn_cars",
                       {"train": "cars_train", "val": "cars_val", "test": "cars_test"})


@pytest.fixture(scope="session")
def srn_chairs(srn_source, tmp_path_factory) -> Path:
    """``srn_chairs/chairs_train/chairs_2.0_train/<object>/...`` etc. (PixelNeRF's nested layout)."""
    return _srn_layout(srn_source, tmp_path_factory.mktemp("layouts") / "srn_chairs",
                       {"train": "chairs_train/chairs_2.0_train", "val": "chairs_val/chairs_2.0_val",
                        "test": "chairs_test/chairs_2.0_test"})
