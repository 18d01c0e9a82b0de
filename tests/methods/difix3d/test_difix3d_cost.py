"""``difix3d-cost``: the base and difix3d loops from the same checkpoint, rounds counted and timed (real ns-train runs
of a few steps on a tiny capture)."""

from __future__ import annotations

import pytest
from rich.console import Console

from ns_diffusion_methods.benchmark.runner import find_definition, load_definition
from ns_diffusion_methods.methods.difix3d.cost_benchmark import run

pytestmark = pytest.mark.slow


def test_the_cost_benchmark_times_the_same_iterations_with_and_without_rounds(tmp_path):
    spec = load_definition(find_definition("difix3d-cost"), {
        "capture": {"image_size": 16, "num_views": 3, "num_eval_views": 2}, "base_iterations": 2,
        "fix_iterations": 4, "steps_per_fix": 2, "families": ["nerfacto"]})
    rows = run(spec, tmp_path, Console(quiet=True))
    base, fixed = rows
    assert (base["family"], base["method"], fixed["method"]) == ("nerfacto", "nerfacto", "difix3d-nerfacto")
    assert base["iterations"] == fixed["iterations"] == 4
    # rounds at the loaded step (2) and every 2 steps while training (steps 2..5): 2 and 4
    assert fixed["rounds"] == 2 and fixed["rounds_s"] > 0
    assert fixed["wall_ratio"] == pytest.approx(fixed["loop_s"] / base["loop_s"], rel=0.01)
    assert fixed["rounds_s"] <= fixed["loop_s"]
