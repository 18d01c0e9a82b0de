"""Benchmark ``difix3d-cost``: what fixing costs at the paper's cadence (a pseudo-view round every 1500 steps).

On one synthetic ``sparse-views`` capture, for each backbone of ``families`` (those of ``difix3d-learned``, read from
its definition unless ``family_settings`` is given: nerfacto and the splat model, with the same sizes and flags):

1. the base trains ``base_iterations`` steps from scratch;
2. from that checkpoint the base and the difix3d method each train ``fix_iterations`` more steps, the difix3d run
   with a round every ``steps_per_fix`` steps (paper: 1500; the first round at the loaded step), so both runs do the
   same number of iterations;
3. the rows give each run's training loop (``Trainer.train``: every iteration, round and checkpoint save; process
   setup and the fixer's load excluded), the time spent in pseudo-view rounds, and the ratio of the loops.

The fixer is a Difix of the ``tiny`` architecture with random weights (``--pipeline.fixer.model tiny``): the cost of a
round is its renders and one fixer pass per pseudo view, which the weights do not change (it is the size of the
fixer ``difix3d-learned`` trains). Quality is not scored here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from rich.console import Console

DEFAULTS: Dict[str, Any] = {
    "seed": 31,
    "capture": {"image_size": 64, "num_views": 12, "num_eval_views": 8},
    "base_iterations": 100,
    "fix_iterations": 1500,
    "steps_per_fix": 1500,
    "families": ["nerfacto", "splat"],
}


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """The benchmark's rows: per family, the base and the difix3d run (module docstring)."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import latest_checkpoint
    from ns_diffusion_methods.benchmark.runner import find_definition, load_definition
    from ns_diffusion_methods.methods.difix3d.benchmark import _train, has_fixer, timed_method
    from ns_diffusion_methods.methods.difix3d.learned_benchmark import IDENTITY_FLAGS, select_families
    from ns_diffusion_methods.methods.difix3d.pipeline import Difix3DPipeline
    from ns_diffusion_methods.synthetic import write_sparse_views

    params = {**DEFAULTS, **spec.get("params", {})}
    if not params.get("family_settings"):  # the difix3d-learned families: one home for their sizes and flags
        params["family_settings"] = load_definition(find_definition("difix3d-learned"))["params"]["family_settings"]
    families = select_families(params)
    base_iterations, fix_iterations = int(params["base_iterations"]), int(params["fix_iterations"])
    steps_per_fix = int(params["steps_per_fix"])
    capture = write_sparse_views(output_dir / "capture", seed=int(params["seed"]), **dict(params["capture"]))
    tiny = ["pipeline.fixer:difix", "--pipeline.fixer.model", "tiny"]
    rows: List[Dict[str, Any]] = []
    for family in families:
        folder = output_dir / "runs" / family.name
        base_fixer = IDENTITY_FLAGS if has_fixer(family.base["method"]) else []
        console.rule(f"[bold]{family.name}[/bold]: {family.base_label} for {base_iterations} steps")
        first = _train(family.base["method"], capture, folder / "base", family.base, base_iterations, base_fixer)
        checkpoint_dir = latest_checkpoint(first["config"]).parent
        console.rule(f"[bold]{family.name}[/bold]: {family.base_label}, {fix_iterations} more steps")
        base = _train(family.base["method"], capture, folder / "base-continued", family.base, fix_iterations,
                      base_fixer, load_dir=checkpoint_dir)
        console.rule(f"[bold]{family.name}[/bold]: {family.difix_label}, {fix_iterations} more steps, a round "
                     f"every {steps_per_fix}")
        with timed_method(Difix3DPipeline, "pseudo_view_round") as rounds:  # rounds that did work
            fixed = _train(family.difix["method"], capture, folder / "difix3d", family.difix, fix_iterations, tiny,
                           load_dir=checkpoint_dir, extra=["--pipeline.steps-per-fix", str(steps_per_fix)])
        rows.append({"family": family.name, "method": family.base_label, "iterations": fix_iterations,
                     "loop_s": round(base["seconds"], 3), "ms_per_iteration": round(1e3 * base["seconds"] /
                                                                                    fix_iterations, 1),
                     "wall_ratio": 1.0})
        rows.append({"family": family.name, "method": family.difix_label, "iterations": fix_iterations,
                     "steps_per_fix": steps_per_fix, "rounds": rounds["calls"],
                     "rounds_s": round(rounds["seconds"], 3), "loop_s": round(fixed["seconds"], 3),
                     "ms_per_iteration": round(1e3 * (fixed["seconds"] - rounds["seconds"]) / fix_iterations, 1),
                     "wall_ratio": round(fixed["seconds"] / base["seconds"], 3)})
        console.print(rows[-2:])
    return rows
