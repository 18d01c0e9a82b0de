"""The GPU suite: refuses its full form without CUDA, counts the CUDA tests of a checkout, and its smoke form runs the
same code on the CPU (so the suite cannot rot on machines without a GPU)."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from rich.console import Console

from ns_diffusion_methods.benchmark.gpu_suite import cuda_test_rows
from ns_diffusion_methods.benchmark.runner import run_benchmark
from ns_diffusion_methods.errors import UserFacingError


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_the_full_suite_needs_cuda(tmp_path):
    with pytest.raises(UserFacingError, match="smoke=true"):
        run_benchmark("gpu-suite", tmp_path / "out")


def test_cuda_tests_are_counted_from_a_checkout(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_gpu.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.cuda
        def test_on_the_gpu():
            pass

        @pytest.mark.cuda
        def test_failing_on_the_gpu():
            assert False

        def test_not_cuda():
            pass
    """))
    (row,) = cuda_test_rows(Console(quiet=True), tmp_path)
    assert (row["passed"], row["failed"], row["status"]) == (1, 1, "failed")
    (row,) = cuda_test_rows(Console(quiet=True), tmp_path / "elsewhere")
    assert row["status"].startswith("not run: no tests/")


@pytest.mark.slow
def test_the_smoke_suite_runs_every_part_on_the_cpu(tmp_path):
    paths = run_benchmark("gpu-suite", tmp_path / "out", overrides={"smoke": True, "parts": ["difix-speed",
                                                                                             "training"]})
    rows = json.loads(paths["json"].read_text())["rows"]
    difix = [r for r in rows if r["part"] == "difix-speed"]
    training = {r["name"]: r for r in rows if r["part"] == "training"}
    assert len(difix) == 2 and all(r["status"] == "ok" and r["ms_per_iter"] > 0 for r in difix)
    assert sorted(training) == ["difix3d-nerfacto-small", "difix3d-splat-small", "mald-nerf-small",
                                "renderdiffusion-small", "ssdnerf-small"]
    assert all(r["status"] == "ok" and r["ms_per_iter"] > 0 for r in training.values())
