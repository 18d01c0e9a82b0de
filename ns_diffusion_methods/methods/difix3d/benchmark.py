"""Benchmark ``difix3d-sparse-views``: does the 3D machinery turn good fixes into better evaluation views?

An **integration check, not evidence** for Difix3D: the oracle fixer returns the ground truth of each pseudo camera
and the pseudo cameras end on the evaluation cameras, so the difix3d methods are trained on (blurred) ground truth of
the views they are scored on, and their gain cannot fail to appear. The evidence with a fixer learned on other scenes
is ``difix3d-learned`` (:mod:`~ns_diffusion_methods.methods.difix3d.learned_benchmark`).

On a synthetic ``sparse-views`` capture (training views on one side of a room, evaluation views on the other), for
each backbone (nerfacto, splats), with nerfstudio's real ``ns-train``/``ns-eval`` code paths:

1. the base method trains ``base_iterations`` steps from scratch;
2. from that checkpoint (``--load-dir``, the paper's protocol), the base method and the difix3d method each train
   ``fix_iterations`` more steps: the same number of iterations in total;
3. ``ns-eval`` scores both on the evaluation views (``rgb``), and the difix3d run also with ``rgb_fixed``.

The fixer is the synthetic-scene **oracle** (:mod:`ns_diffusion_methods.fixers.oracle`, chosen with
``pipeline.fixer:oracle``): the generator's ground truth of each pseudo camera, lightly blurred and noised. It measures
the pseudo-view machinery (targets, progressive poses, sampling, masking, checkpointing) with a fixer of known quality,
not Difix itself; consequently ``rgb_fixed`` rows are the oracle's own (degraded ground-truth) images and only show the
upper bound of render-time fixing. Wall-time ratios compare the training loops (``Trainer.train``) of the fixing phase:
``fix_iterations`` steps of each method from the same checkpoint, pseudo-view rounds included, process setup excluded.

The splat base is splatfacto's model with the settings of ``difix3d-splat-small`` (``difix3d-splat-small`` with no
pseudo-view round and unweighted losses; gsplat on CUDA, the package's torch rasterizer elsewhere): stock
``splatfacto`` needs CUDA, and its ``--load-dir`` leaves the optimizers on stale parameters in nerfstudio 1.1.5.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import torch
from rich.console import Console

from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, latest_checkpoint, train_run

#: flags every run gets: no in-training evaluation (ns-eval scores the runs)
COMMON_FLAGS = ["--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0"]


def oracle_flags(capture: Path, params: Dict[str, Any]) -> List[str]:
    """The fixer flags that select the synthetic-scene oracle (``params["oracle"]``: blur and noise)."""
    oracle = params.get("oracle", {})
    return ["pipeline.fixer:oracle", "--pipeline.fixer.scene", str(capture / "scene.json"),
            "--pipeline.fixer.blur-sigma", str(float(oracle.get("blur_sigma", 0.5))),
            "--pipeline.fixer.noise-std", str(float(oracle.get("noise_std", 0.01)))]


def has_fixer(method: str) -> bool:
    """Whether the registered ``method`` has a fixer (a ``pipeline.fixer`` to set to the oracle)."""
    from nerfstudio.configs.method_configs import all_methods

    return hasattr(all_methods[method].pipeline, "fixer")


def _train(method: str, capture: Path, folder: Path, entry: Dict[str, Any], iterations: int,
           oracle: Sequence[str], load_dir: Optional[Path] = None, extra: Sequence[str] = ()) -> Dict[str, Any]:
    """One ns-train run of a family entry (``method``, ``flags``, ``cpu_flags``), with the ``oracle`` fixer flags
    when the method has a fixer; returns its config path, wall time and ns-eval results."""
    run_flags = [*COMMON_FLAGS, *entry.get("flags", []), *extra, "--max-num-iterations", str(iterations),
                 "--steps-per-save", str(iterations)]
    if not torch.cuda.is_available():
        run_flags = ["--machine.device-type", "cpu", "--mixed-precision", "False", *run_flags,
                     *entry.get("cpu_flags", [])]
    if load_dir is not None:
        run_flags += ["--load-dir", str(load_dir)]
    if has_fixer(method):
        run_flags += oracle  # a subcommand with its flags: after every other flag

    with _timed_training_loop() as loop:
        config_path, _total_seconds = train_run(method, capture, folder, run_flags)
    results = eval_run(config_path, folder / "eval.json")["results"]
    return {"config": config_path, "seconds": loop["seconds"], "results": results}


@contextmanager
def timed_method(owner: Any, name: str) -> Iterator[Dict[str, float]]:
    """Accumulate the wall time of every call of ``owner.name`` while the context is open: ``seconds`` in all and
    ``calls``, the calls that returned something other than False (a pseudo-view round that did no work returns
    False). The wrapper keeps the method's signature (nerfstudio checks a callback's ``step`` argument)."""
    import functools

    timing = {"seconds": 0.0, "calls": 0}
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = None
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            if result is not False:
                timing["seconds"] += time.perf_counter() - start
                timing["calls"] += 1

    setattr(owner, name, timed)
    try:
        yield timing
    finally:
        setattr(owner, name, original)


def _timed_training_loop():
    """Measure ``Trainer.train`` (every iteration, pseudo-view round and checkpoint save; not the setup: process
    start, data loading, the fixer's load), so wall-time ratios compare the training itself."""
    from nerfstudio.engine.trainer import Trainer

    return timed_method(Trainer, "train")


def _row(family: str, name: str, iterations: int, results: Dict[str, Any], suffix: str = "", **extra: Any
         ) -> Dict[str, Any]:
    row: Dict[str, Any] = {"family": family, "method": name, "iterations": iterations}
    for metric in ("psnr", "ssim", "lpips"):
        key = f"{metric}{suffix}"
        if key in results:
            row[metric] = round(float(results[key]), 4)
    row.update(extra)
    return row


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """Run the benchmark (see the module docstring); returns one row per scored model."""
    from ns_diffusion_methods.synthetic import write_sparse_views

    params = spec.get("params", {})
    capture_args = dict(params.get("capture", {}))
    capture = write_sparse_views(output_dir / "capture" / "sparse-views", **capture_args)
    base_iterations = int(params.get("base_iterations", 400))
    fix_iterations = int(params.get("fix_iterations", 400))
    total = base_iterations + fix_iterations
    oracle = oracle_flags(capture, params)
    fixing = ["--pipeline.fix-start-step", str(base_iterations),
              "--pipeline.steps-per-fix", str(params.get("steps_per_fix", 30)),
              "--pipeline.step-size", str(params.get("step_size", 0.5))]
    rows: List[Dict[str, Any]] = []
    for family in params.get("families", []):
        name = family["name"]
        base = family["base"]
        base_label = family.get("base_label", base["method"])
        difix = family["difix"]
        folder = output_dir / "runs" / name
        console.rule(f"[bold]{name}[/bold]: {base_label} for {base_iterations} steps")
        phase1 = _train(base["method"], capture, folder / "base", base, base_iterations, oracle)
        checkpoint_dir = latest_checkpoint(phase1["config"]).parent
        console.rule(f"[bold]{name}[/bold]: {base_label}, {fix_iterations} more steps")
        baseline = _train(base["method"], capture, folder / "base-continued", base, fix_iterations, oracle,
                          load_dir=checkpoint_dir)
        console.rule(f"[bold]{name}[/bold]: {difix['method']}, {fix_iterations} more steps (oracle fixer)")
        improved = _train(difix["method"], capture, folder / "difix3d", difix, fix_iterations, oracle,
                          load_dir=checkpoint_dir, extra=fixing)
        ratio = improved["seconds"] / baseline["seconds"]
        gain = float(improved["results"]["psnr"]) - float(baseline["results"]["psnr"])
        rows.append(_row(name, base_label, total, baseline["results"], fix_phase_s=round(baseline["seconds"], 1),
                         wall_ratio=1.0))
        rows.append(_row(name, family.get("difix_label", difix["method"]), total, improved["results"],
                         fix_phase_s=round(improved["seconds"], 1), wall_ratio=round(ratio, 2),
                         psnr_gain_db=round(gain, 2), passes_1db=gain >= 1.0))
        if "psnr_fixed" in improved["results"]:
            rows.append(_row(name, f"{family.get('difix_label', difix['method'])} rgb_fixed (oracle)", total,
                             improved["results"], suffix="_fixed"))
        console.print(f"{name}: PSNR {baseline['results']['psnr']:.2f} -> {improved['results']['psnr']:.2f} dB "
                      f"({gain:+.2f}), wall-time ratio {ratio:.2f}")
    return rows
