"""The ``gpu-suite`` benchmark: everything a CUDA machine should measure, in one command and one ``results.md``.

On a CUDA machine (``ns-diffusion benchmark gpu-suite``):

1. ``cuda tests``: the test suite's CUDA tests (``pytest -m cuda``, from a checkout of the repository: the tests are
   not installed with the package), their pass/fail counts;
2. ``difix-speed``: the Difix fixer's milliseconds per frame and peak memory (the ``difix-speed`` benchmark's grid:
   576x1024 and 1080p, float32/bfloat16, 0/1 reference);
3. ``training``: a few iterations of every method's full preset (paper sizes; tiny random diffusion models, so no
   download is needed) on a synthetic capture: seconds per iteration and peak GPU memory. ``difix3d-splat`` trains
   with gsplat there; the package's torch rasterizer is timed beside it on the same capture.

``--set smoke=true`` runs the same code on a CPU with the small presets, 64-pixel Difix frames and one iteration
(the test suite does this, so the suite cannot rot without a GPU). The suite never downloads anything.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ns_diffusion_methods.errors import UserFacingError

#: (method, capture kind, extra ns-train flags before the backend subcommand, the backend subcommand and its flags)
FULL_RUNS = [
    ("mald-nerf", "object-removal", [], ["pipeline.inpainter:ldm", "--pipeline.inpainter.model", "tiny"]),
    ("difix3d-nerfacto", "sparse-views", [], ["pipeline.fixer:difix", "--pipeline.fixer.model", "tiny"]),
    ("difix3d-splat", "sparse-views", [], ["pipeline.fixer:difix", "--pipeline.fixer.model", "tiny"]),
    ("ssdnerf", "objects", [], []),
    ("renderdiffusion", "objects", [], []),
]

#: extra flags of the smoke runs (small presets, shrunk to seconds per iteration on a CPU)
SMOKE_FLAGS: Dict[str, List[str]] = {
    "mald-nerf": ["--pipeline.model.num-levels", "4", "--pipeline.model.log2-hashmap-size", "12",
                  "--pipeline.datamanager.train-num-rays-per-batch", "64"],
    "difix3d-nerfacto": [],
    "difix3d-splat": ["--pipeline.model.num-random", "500"],
    "ssdnerf": ["--pipeline.model.code-resolution", "8", "--pipeline.datamanager.objects-per-batch", "2"],
    "renderdiffusion": ["--pipeline.model.pixels-per-image", "32", "--pipeline.datamanager.images-per-batch", "2"],
}

#: backend flags of the smoke runs (after the backend subcommand)
SMOKE_BACKEND_FLAGS: Dict[str, List[str]] = {
    "mald-nerf": ["--pipeline.inpainter.customization.steps", "1", "--pipeline.inpainter.customization.batch-size",
                  "1"],
}

NO_EVAL = ["--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0",
           "--steps-per-save", "100000"]


def _capture(kind: str, folder: Path, smoke: bool) -> Path:
    from ns_diffusion_methods import synthetic

    if kind == "objects":
        size = 32 if smoke else 128
        return synthetic.write_objects(folder / kind, seed=0, image_size=size, num_train=4 if smoke else 16,
                                       num_test=2, views=(6, 8) if smoke else (24, 24))
    writer = synthetic.write_object_removal if kind == "object-removal" else synthetic.write_sparse_views
    return writer(folder / kind, seed=0, image_size=48 if smoke else 256, num_views=8 if smoke else 24)


def cuda_test_rows(console: Any, repository: Path) -> List[Dict[str, Any]]:
    """``pytest -m cuda`` in ``repository`` (a checkout): one row with the counts, or why it did not run."""
    row: Dict[str, Any] = {"part": "cuda tests", "name": "pytest -m cuda"}
    tests = repository / "tests"
    if not tests.is_dir():
        return [{**row, "status": f"not run: no tests/ in {repository} (run the suite from a checkout)"}]
    console.print("[bold]CUDA tests[/bold] (pytest -m cuda)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                             str(tests)], cwd=repository, capture_output=True, text=True, check=False)
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)",
                                                   result.stdout)}
    status = "ok" if result.returncode in (0, 5) and not counts.get("failed") else "failed"
    if status == "failed":
        console.print(result.stdout[-4000:])
    return [{**row, "passed": counts.get("passed", 0), "failed": counts.get("failed", 0),
             "skipped": counts.get("skipped", 0), "seconds": round(time.perf_counter() - start, 1),
             "status": status}]


def difix_rows(console: Any, output_dir: Path, smoke: bool) -> List[Dict[str, Any]]:
    """The ``difix-speed`` grid (smoke: the tiny architecture at 64x64, one repeat)."""
    from ns_diffusion_methods.benchmark.runner import find_definition, load_definition
    from ns_diffusion_methods.fixers.benchmark import run as difix_speed

    spec = load_definition(find_definition("difix-speed"))
    if smoke:
        spec["params"].update({"architecture": "tiny", "resolutions": [[64, 64]], "dtypes": ["float32"],
                               "references": [0, 1], "warmup": 0, "repeats": 1, "cpu_params": None})
    rows = difix_speed(spec, output_dir / "difix-speed", console)
    return [{"part": "difix-speed", "name": r.get("setting"), "ms_per_iter": r.get("ms_per_frame"),
             "peak_memory_mb": r.get("peak_memory_mb"), "device": r.get("device"), "status": r.get("status")}
            for r in rows]


def training_rows(console: Any, output_dir: Path, smoke: bool, iterations: int,
                  methods: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """A few iterations of each method (full preset on CUDA; smoke: small preset on the CPU)."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run

    cuda = torch.cuda.is_available() and not smoke
    captures: Dict[str, Path] = {}
    rows: List[Dict[str, Any]] = []
    runs = [r for r in FULL_RUNS if methods is None or r[0] in methods]
    if cuda and (methods is None or "difix3d-splat" in methods):  # the package's rasterizer on the same capture
        runs.append(("difix3d-splat", "sparse-views", ["--pipeline.model.rasterizer", "torch"], FULL_RUNS[2][3]))
    for method, kind, extra, backend in runs:
        name = method + ("-small" if smoke else "")
        label = f"{name} (torch rasterizer)" if extra else name
        if kind not in captures:
            captures[kind] = _capture(kind, output_dir / "captures", smoke)
        flags = [*NO_EVAL, *extra, *(SMOKE_FLAGS.get(method, []) if smoke else []),
                 "--max-num-iterations", str(iterations)]
        if not cuda:
            flags = ["--machine.device-type", "cpu", "--mixed-precision", "False", *flags]
        dataparser = ["srn-data"] if kind == "objects" else []
        row: Dict[str, Any] = {"part": "training", "name": label, "iterations": iterations}
        console.rule(f"[bold]{label}[/bold]: {iterations} iterations")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            _, seconds = train_run(name, captures[kind], output_dir / "runs" / label.replace(" ", "_"),
                                   [*flags, *backend, *(SMOKE_BACKEND_FLAGS.get(method, []) if smoke else [])],
                                   dataparser)
        except torch.cuda.OutOfMemoryError:
            rows.append({**row, "status": "out of memory"})
            continue
        row.update({"ms_per_iter": round(1000 * seconds / iterations, 1), "status": "ok",
                    "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None})
        rows.append(row)
    return rows


def run(spec: Dict[str, Any], output_dir: Path, console: Any) -> List[Dict[str, Any]]:
    """The suite's rows (module docstring); refuses to run its full form without CUDA."""
    params = spec.get("params", {})
    smoke = bool(params.get("smoke", False))
    if not smoke and not torch.cuda.is_available():
        raise UserFacingError("The GPU suite measures CUDA figures and this machine has no CUDA device. Run it on a "
                              "GPU machine, or check that it works with `ns-diffusion benchmark gpu-suite --set "
                              "smoke=true` (small sizes on the CPU).")
    parts = params.get("parts", ["cuda-tests", "difix-speed", "training"])
    rows: List[Dict[str, Any]] = []
    if "cuda-tests" in parts:
        rows += cuda_test_rows(console, Path(params.get("repository") or Path.cwd()))
    if "difix-speed" in parts:
        rows += difix_rows(console, output_dir, smoke)
    if "training" in parts:
        rows += training_rows(console, output_dir, smoke, int(params.get("smoke_iterations" if smoke else
                                                                          "iterations", 1 if smoke else 5)),
                              params.get("methods"))
    return rows
