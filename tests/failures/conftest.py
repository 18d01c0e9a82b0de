"""Fixtures of the failure tests: broken copies of the synthetic object-removal capture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest


@pytest.fixture
def broken_capture(object_removal_capture, tmp_path) -> Callable[..., Path]:
    """``broken_capture(edit)``: a copy of the object-removal capture after ``edit(folder, transforms)``.

    ``edit`` may change files of the folder and the ``transforms.json`` dict (written back afterwards).
    """

    def make(edit: Callable[[Path, dict], None], name: str = "capture") -> Path:
        folder = tmp_path / name
        shutil.copytree(object_removal_capture, folder)
        transforms = json.loads((folder / "transforms.json").read_text())
        edit(folder, transforms)
        (folder / "transforms.json").write_text(json.dumps(transforms, indent=1))
        return folder

    return make
