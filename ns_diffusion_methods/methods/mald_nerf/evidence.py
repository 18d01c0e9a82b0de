"""Benchmark ``mald-nerf-evidence``: does masked adversarial training fill the hole better than the controls, over
seeds, fills and captures?

Every run trains ``mald-nerf-small`` (or stock nerfacto) on a synthetic object-removal capture and is scored by
``ns-eval`` on the capture's object-free test views. The runs differ only in what supervises the object region:

- ``mald-nerf``: the masked adversarial loss (+ feature matching) towards the fills, the method;
- ``nothing inside``: no loss inside the mask at all (``--pipeline.adversarial False``): the hole is whatever the
  NeRF makes of the other views; the control every claim is measured against. It never reads the fills, so it is
  trained once per capture and seed;
- ``L1 inside``: L1 towards the fills inside the mask, no adversarial loss;
- ``LPIPS inside``: LPIPS towards the fills inside the mask; needs the LPIPS backbone weights and is reported
  unavailable without them;
- ``nerfacto``: stock nerfacto at the same sizes (no removal: the object stays), trained once per capture and seed;
- ``fills``: the fills themselves, scored on the training views they fill (not on the test views).

The fills come from an **oracle** (:func:`~ns_diffusion_methods.methods.mald_nerf.benchmark.write_oracle`), so the
loss is measured apart from the quality of an inpainting model:

- ``consistent``: the true background with a per-view colour shift and a jitter of at most 2 px (kind: every fill
  is nearly the truth);
- ``hallucinating``: per view, the background moved by 20-40 % of the image width, mirrored half of the time and
  recoloured: plausible room content, different in every view, never the truth (as a diffusion inpainter's
  hallucinations are).

and on two capture kinds (:func:`~ns_diffusion_methods.synthetic.write_object_removal`'s ``hole``): ``seen``, where
much of each test view's hole shows unmasked in some training view, and ``unseen``, where little of it does. Each
capture's ``hole_visible_fraction`` (mean over its test views,
:func:`~ns_diffusion_methods.synthetic.captures.capture_hole_visibility`) is in its rows.

Rows: one per run (``seed``, ``repeat``), then per (capture, oracle, method) the mean and the standard deviation over
seeds (``*_std``; with ``repeats`` > 1 also ``*_std_repeats``, the mean over seeds of the standard deviation between
repeated runs of one seed: CPU training is not deterministic). ``summary.md`` in the output folder holds the summary
table alone. Runs go to ``workers`` processes at once (one torch thread each on a CPU).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

#: default parameters (override with ``ns-diffusion benchmark mald-nerf-evidence --set KEY=VALUE``)
DEFAULTS: Dict[str, Any] = {
    "seeds": [1, 2, 3],
    "repeats": 1,
    "captures": ["seen", "unseen"],
    "oracles": ["consistent", "hallucinating"],
    "methods": ["mald-nerf", "nothing inside", "L1 inside", "LPIPS inside", "nerfacto", "fills"],
    "image_size": 32,
    "num_views": 12,
    "num_eval_views": 4,
    "max_num_iterations": 400,
    "colour_shift": 0.12,
    "jitter_px": 2,
    "shift_range": [0.2, 0.4],
    "workers": 2,
    "mald_variants": {"mald-nerf": []},
}

#: ``ns-train mald-nerf-small`` flags of each variant (the oracle inpainter is added to all)
VARIANT_FLAGS: Dict[str, List[str]] = {
    "mald-nerf": [],
    "nothing inside": ["--pipeline.adversarial", "False"],
    "L1 inside": ["--pipeline.adversarial", "False", "--pipeline.model.inside-l1-loss-mult", "1.0"],
    "LPIPS inside": ["--pipeline.adversarial", "False", "--pipeline.inside-lpips-loss-mult", "1.0"],
}
#: variants that never read the fills: trained once per capture and seed, whatever the oracle
FILL_FREE = ("nothing inside", "nerfacto")
#: metrics copied from ns-eval's results
SCORES = ("masked_psnr", "psnr", "ssim", "mask_sharpness", "mask_sharpness_gt", "lpips", "m_lpips", "m_lpips_bbox")
#: metrics averaged in the summary rows
SUMMARISED = ("masked_psnr", "psnr", "ssim", "mask_sharpness", "mask_sharpness_gt", "hole_visible_fraction",
              "train_s")
UNAVAILABLE = "unavailable (LPIPS backbone weights missing offline)"


# ------------------------------------------------------------------------------------------------ one run
def _job(method: str, capture: str, run_dir: str, flags: Sequence[str], oracle_file: Optional[str],
         iterations: int, threads: int) -> Dict[str, Any]:
    """Train and evaluate one variant (in a worker process); its console output goes to ``run_dir/log.txt``."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run
    from ns_diffusion_methods.methods.mald_nerf.benchmark import (
        _reset_profiler,
        _seconds_per_iteration,
        _train_nerfacto,
        _train_with_oracle,
    )

    if threads > 0:
        torch.set_num_threads(threads)
    run_path = Path(run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    with open(run_path / "log.txt", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            _reset_profiler()
            start = time.perf_counter()
            if method == "nerfacto":
                config = _train_nerfacto(Path(capture), run_path, iterations)
            else:
                config = _train_with_oracle(Path(capture), run_path, Path(oracle_file), flags)
            row: Dict[str, Any] = {"train_s": round(time.perf_counter() - start, 1),
                                   "s_per_iter": _seconds_per_iteration()}
            results = eval_run(config, keep_saved_datamanager=method == "nerfacto")["results"]
        except Exception as err:  # noqa: BLE001 - one failed run is reported in its row, the others go on
            import traceback

            traceback.print_exc()
            return {"status": f"failed: {type(err).__name__}: {err} (log: {run_path / 'log.txt'})"}
    row.update({key: results[key] for key in SCORES if key in results})
    row["status"] = "ok"
    return row


# ------------------------------------------------------------------------------------------------ the benchmark
def _capture_label(capture: Dict[str, Any]) -> Tuple[str, int]:
    return capture["capture"], capture["seed"]


def run(spec: Dict[str, Any], output_dir: Path, console) -> List[Dict[str, Any]]:
    """Run the benchmark (see the module docstring); returns the per-run rows, then the summary rows."""
    import concurrent.futures
    import multiprocessing

    from ns_diffusion_methods.methods.mald_nerf.benchmark import write_oracle
    from ns_diffusion_methods.metrics.lpips import lpips_metric
    from ns_diffusion_methods.synthetic import write_object_removal
    from ns_diffusion_methods.synthetic.captures import capture_hole_visibility

    params = {**DEFAULTS, **(spec.get("params") or {})}
    output_dir = Path(output_dir)
    iterations = int(params["max_num_iterations"])
    methods = list(params["methods"])
    unknown = sorted(set(methods) - set(VARIANT_FLAGS) - {"nerfacto", "fills"})
    if unknown:
        raise ValueError(f"`methods` may hold {', '.join([*VARIANT_FLAGS, 'nerfacto', 'fills'])}, but got {unknown}.")
    lpips_available = getattr(lpips_metric(normalize=True), "available", True)
    common = ["--max-num-iterations", str(iterations), "--steps-per-save", str(iterations),
              "--machine.device-type", "cuda" if torch.cuda.is_available() else "cpu"]
    workers = max(1, int(params["workers"]))
    threads = 0 if torch.cuda.is_available() else max(1, (os.cpu_count() or 1) // workers)

    # captures and fills first (cheap, deterministic), then every training run
    rows: List[Dict[str, Any]] = []
    jobs: List[Tuple[Dict[str, Any], tuple]] = []
    for hole in params["captures"]:
        for seed in params["seeds"]:
            folder = output_dir / "captures" / f"{hole}-{seed}"
            write_object_removal(folder, seed=int(seed), image_size=int(params["image_size"]),
                                 num_views=int(params["num_views"]), num_eval_views=int(params["num_eval_views"]),
                                 hole=hole)
            visible = [v for v in capture_hole_visibility(folder) if math.isfinite(v)]
            base = {"capture": hole, "seed": int(seed), "hole_visible_fraction": round(sum(visible) / len(visible), 3)}
            console.print(f"Capture {hole} seed {seed}: {100 * base['hole_visible_fraction']:.0f} % of the test "
                          f"views' holes visible unmasked in some training view")
            oracle_files = {}
            for oracle in params["oracles"]:
                oracle_files[oracle] = output_dir / "oracles" / f"{hole}-{seed}-{oracle}.pt"
                oracle_files[oracle].parent.mkdir(parents=True, exist_ok=True)
                fills = write_oracle(folder, oracle_files[oracle], int(seed), float(params["colour_shift"]),
                                     int(params["jitter_px"]), kind=oracle,
                                     shift_range=tuple(params["shift_range"]))
                if "fills" in methods:
                    rows.append({"method": "fills", "oracle": oracle, **base, "repeat": 0, **fills,
                                 "status": "the fills on the training views they fill (not the test views)"})
            for repeat in range(int(params["repeats"])):
                for method, extra in _expand(methods, params["mald_variants"]):
                    oracles = ["(not used)"] if method in FILL_FREE else list(params["oracles"])
                    for oracle in oracles:
                        row = {"method": method, "oracle": oracle, **base, "repeat": repeat}
                        if method == "LPIPS inside" and not lpips_available:
                            if repeat == 0:
                                rows.append({**row, "status": UNAVAILABLE})
                            continue
                        flags = [*common, *VARIANT_FLAGS.get(method, []), *extra]
                        file = oracle_files[params["oracles"][0] if oracle == "(not used)" else oracle]
                        name = f"{method}-{oracle}-{repeat}".replace(" ", "-").replace("(", "").replace(")", "")
                        run_dir = output_dir / "runs" / f"{hole}-{seed}" / name
                        jobs.append((row, (method, str(folder), str(run_dir), flags, str(file), iterations, threads)))

    console.print(f"{len(jobs)} training runs, {workers} at a time ({threads or 'default'} torch threads each)")
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_job, *args): row for row, args in jobs}
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            row = futures[future]
            try:
                row.update(future.result())
            except Exception as err:  # noqa: BLE001 - a crashed worker fails its run only
                row["status"] = f"failed: {type(err).__name__}: {err}"
            if not lpips_available and row.get("status") == "ok":
                row.update(lpips=UNAVAILABLE, m_lpips=UNAVAILABLE)
            rows.append(row)
            console.print(f"[{done}/{len(jobs)}, {time.perf_counter() - started:.0f} s] {row['method']} "
                          f"({row['oracle']}) on {row['capture']} seed {row['seed']} repeat {row['repeat']}: "
                          f"masked PSNR {_fmt(row.get('masked_psnr'))}, PSNR {_fmt(row.get('psnr'))}, "
                          f"{row['status']}")
    order = {"fills": -1, **{name: i for i, (name, _) in enumerate(_expand(methods, params["mald_variants"]))}}
    rows.sort(key=lambda r: (r["capture"], r["oracle"], order.get(r["method"], 99), r["seed"], r["repeat"]))
    summary = summarise(rows)
    (output_dir / "summary.md").write_text(summary_markdown(summary, params))
    return [*summary, *rows]


def _expand(methods: Sequence[str], mald_variants: Dict[str, Sequence[str]]) -> List[Tuple[str, List[str]]]:
    """``(name, extra ns-train flags)`` of every trained method: ``mald-nerf`` stands for each of ``mald_variants``
    (name -> flags added to mald-nerf-small's, e.g. ``{"mald-nerf, no feature matching":
    ["--pipeline.feature-matching-loss-mult", "0"]}``); ``fills`` is not trained."""
    expanded = []
    for method in methods:
        if method == "mald-nerf":
            expanded += [(name, [str(flag) for flag in flags]) for name, flags in mald_variants.items()]
        elif method != "fills":
            expanded.append((method, []))
    return expanded


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def summarise(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per (capture, oracle, method): the mean over seeds of each metric (a seed's value: the mean over its repeats),
    ``*_std`` the standard deviation over seeds, ``*_std_repeats`` the mean over seeds of the standard deviation
    between repeats (only with repeats), and ``n_seeds`` / ``n_runs``."""
    groups: Dict[Tuple[str, str, str], List[Dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok" or row["method"] == "fills":
            groups.setdefault((row["capture"], row["oracle"], row["method"]), []).append(row)
    summary = []
    for (capture, oracle, method), members in groups.items():
        out: Dict[str, Any] = {"method": method, "oracle": oracle, "capture": capture, "seed": "mean over seeds"}
        seeds = sorted({r["seed"] for r in members})
        out.update(n_seeds=len(seeds), n_runs=len(members))
        for key in SUMMARISED:
            per_seed, spreads = [], []
            for seed in seeds:
                values = [r[key] for r in members if r["seed"] == seed and isinstance(r.get(key), (int, float))]
                if values:
                    per_seed.append(statistics.fmean(values))
                    if len(values) > 1:
                        spreads.append(statistics.stdev(values))
            if per_seed:
                out[key], out[f"{key}_std"] = _mean_std(per_seed)
                if spreads:
                    out[f"{key}_std_repeats"] = statistics.fmean(spreads)
        out["status"] = "summary"
        summary.append(out)
    return summary


def summary_markdown(summary: List[Dict[str, Any]], params: Dict[str, Any]) -> str:
    """The summary rows as one Markdown table, ``mean ± std over seeds`` per metric."""

    def cell(row: Dict[str, Any], key: str, digits: int) -> str:
        if key not in row:
            return ""
        text = f"{row[key]:.{digits}f}"
        if math.isfinite(row.get(f"{key}_std", float("nan"))):
            text += f" ± {row[f'{key}_std']:.{digits}f}"
        if f"{key}_std_repeats" in row:
            text += f" (runs ± {row[f'{key}_std_repeats']:.{digits}f})"
        return text

    lines = [f"Settings: {', '.join(f'{k}={v}' for k, v in params.items())}", "",
             "| capture (hole visible) | oracle | method | seeds | masked PSNR | PSNR | SSIM | mask sharpness "
             "(truth) |", "|---|---|---|---|---|---|---|---|"]
    for row in summary:
        sharp = cell(row, "mask_sharpness", 0)
        if "mask_sharpness_gt" in row:
            sharp += f" ({row['mask_sharpness_gt']:.0f})"
        lines.append(f"| {row['capture']} ({100 * row.get('hole_visible_fraction', float('nan')):.0f} %) | "
                     f"{row['oracle']} | {row['method']} | {row['n_seeds']} | {cell(row, 'masked_psnr', 2)} | "
                     f"{cell(row, 'psnr', 2)} | {cell(row, 'ssim', 3)} | {sharp} |")
    return "\n".join(lines) + "\n"
