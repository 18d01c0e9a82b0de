"""The difix-speed benchmark entry runs (tiny architecture here) and returns the declared columns."""

from __future__ import annotations

import yaml
from rich.console import Console

from ns_diffusion_methods.benchmark.runner import PACKAGE_DEFINITIONS
from ns_diffusion_methods.fixers.benchmark import run

DEFINITION = PACKAGE_DEFINITIONS / "difix-speed.yaml"


def test_benchmark_rows_have_the_declared_columns(tmp_path):
    spec = yaml.safe_load(DEFINITION.read_text())
    assert spec["entry"] == "ns_diffusion_methods.fixers.benchmark:run"
    spec["params"].update(architecture="tiny", device="cpu", warmup=1, repeats=2, cpu_params=None,
                          resolutions=[[50, 70]], dtypes=["float32"], references=[0, 2])
    rows = run(spec, tmp_path, Console(quiet=True))
    assert [(r["resolution"], r["references"]) for r in rows] == [("50x70", 0), ("50x70", 2)]
    for row in rows:
        assert set(spec["columns"]) <= set(row), row
        assert row["status"] == "ok" and row["ms_per_frame"] > 0 and row["peak_memory_mb"] > 0
