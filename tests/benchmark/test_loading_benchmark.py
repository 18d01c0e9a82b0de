"""``multi-object-loading`` end to end at a tiny size: the dataset written to the asked size, each loader run in its
own process, the rows' sizes computed from what was loaded, extrapolation flagged only where a fraction was loaded."""

from __future__ import annotations

import pytest
from rich.console import Console

from ns_diffusion_methods.data.loading_benchmark import run

pytestmark = pytest.mark.slow


def test_rows_measure_the_written_dataset(tmp_path):
    params = {"train_objects": 4, "train_views": 3, "test_objects": 2, "test_views": 4, "image_size": 8,
              "distinct_train": 2, "distinct_test": 1, "fraction": 1.0, "previous_fraction": 0.5, "workers": [2],
              "delete_data": False}
    rows = run({"params": params}, tmp_path, Console(quiet=True))
    assert [row["loader"] for row in rows] == ["package", "per-object + concat"]
    package, previous = rows
    # 4 objects x 3 views of 8x8 RGB; the copies of 2 distinct objects are all there
    assert package["objects_loaded"] == 4 and not package["extrapolated"] and package["workers"] == 2
    assert package["train_images_gb"] == pytest.approx(4 * 3 * 8 * 8 * 3 / 1e9)
    assert len(list((tmp_path / "srn-1" / "train").iterdir())) == 4
    assert len(list((tmp_path / "srn-1" / "test").iterdir())) == 2
    # half the objects, scaled to the full size and flagged
    assert previous["objects_loaded"] == 2 and previous["extrapolated"]
    assert previous["load_s"] == pytest.approx(2 * previous["measured_load_s"])
    assert previous["train_images_gb"] == pytest.approx(package["train_images_gb"])
    for row in rows:
        assert row["load_s"] > 0 and row["peak_ram_gb"] >= row["baseline_ram_gb"] > 0
