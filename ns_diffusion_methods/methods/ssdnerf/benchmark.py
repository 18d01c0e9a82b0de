"""The ``ssdnerf-objects`` benchmark: does SSDNeRF's learned prior help single- and two-view reconstruction?

Steps, all through nerfstudio's own code paths:

1. write the synthetic ``objects`` dataset (white background, SRN layout);
2. train ``ssdnerf-small`` with ``ns-train``'s code path
   (:func:`ns_diffusion_methods.benchmark.nerfstudio_runs.train_run`), or load a trained run (``load_config``);
3. load it as ``ns-eval`` does (``eval_setup``) and run the reconstruction protocol on the held-out objects for
   every variant below, 1-view and 2-view. Variants that share an initialisation share it exactly (the same guided
   sample, the same mean code), so their differences come from the procedure, not from sampling noise;
4. report, per variant and number of views, the mean and spread **over objects** (std and a 95 % t-interval of the
   per-object mean PSNR/SSIM), the paired difference to the full method with its interval, and the fraction of
   saturated code elements (``|code| > 1.99``) after the initialisation and after fine-tuning;
5. generate new objects (unconditional DDIM), write turntables to ``samples/`` and score them with an always
   available proxy: the distance between the samples' and the training images' silhouette and colour statistics.

Skeptic's baselines: the mean training code fine-tuned with the rendering loss alone (no prior anywhere), and the
mean code as it is. LPIPS needs VGG weights that are not available offline; it is reported as unavailable then.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rich.console import Console

#: (row name, init, fine-tuning, key, test-time setting overrides) of the variants, in table order; "full" is the
#: paper's method. ``key`` (init+finetune[+tag]) selects variants in the definition's ``variants`` lists.
VARIANTS: List[Tuple[str, str, str, str, Dict[str, Any]]] = [
    ("full: guided DDIM + fine-tuning with prior", "guided", "prior", "guided+prior", {}),
    ("full, fine-tuning from |code| <= 1.9 (margin 0.05)", "guided", "prior", "guided+prior+margin",
     {"finetune_init_margin": 0.05}),
    ("guided DDIM + rendering-only fine-tuning (A2)", "guided", "render", "guided+render", {}),
    ("guided DDIM only (A3)", "guided", "none", "guided+none", {}),
    ("mean code + fine-tuning with prior (optim)", "mean", "prior", "mean+prior", {}),
    ("unguided DDIM + fine-tuning with prior", "unguided", "prior", "unguided+prior", {}),
    ("no prior: mean code + rendering-only fine-tuning", "mean", "render", "mean+render", {}),
    ("mean code", "mean", "none", "mean+none", {}),
]
FULL = VARIANTS[0][0]

#: two-sided 95 % Student-t quantiles by degrees of freedom (normal beyond the table)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 24: 2.064, 29: 2.045, 30: 2.042, 39: 2.023, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(dof: int) -> float:
    """Two-sided 95 % Student-t quantile for ``dof`` degrees of freedom (the next smaller tabulated dof)."""
    if dof < 1:
        return float("nan")
    keys = [k for k in sorted(_T95) if k <= dof]
    return _T95[keys[-1]] if dof <= 120 else 1.960


def mean_interval(values: Sequence[float]) -> Tuple[float, float, float]:
    """``(mean, std, half-width of the 95 % t-interval of the mean)`` of per-object values (std with ddof 1)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan"), float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, t95(n - 1) * std / math.sqrt(n)


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """Run the benchmark; returns one row per (variant, views), paired differences, and one for generation."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run
    from ns_diffusion_methods.synthetic import write_objects

    params = dict(spec.get("params") or {})
    method = params.get("method", "ssdnerf-small")
    flags = [str(f) for f in params.get("flags") or []]
    output_dir.mkdir(parents=True, exist_ok=True)

    train_s = 0.0
    if params.get("load_config"):
        config_path = Path(str(params["load_config"]))
        console.print(f"[bold]ssdnerf-objects[/bold]: evaluating the trained run {config_path}")
    else:
        data_args = dict(seed=int(params.get("data_seed", 0)), image_size=int(params.get("image_size", 32)),
                         num_train=int(params.get("num_train", 64)), num_test=int(params.get("num_test", 32)),
                         views=tuple(params.get("views", (16, 24))), background="white",
                         max_primitives=int(params.get("max_primitives", 1)))
        console.print(f"[bold]ssdnerf-objects[/bold]: writing the objects dataset {data_args}")
        data = write_objects(output_dir / "data", **data_args)
        console.print(f"training {method} {' '.join(flags)}")
        config_path, train_s = train_run(method, data, output_dir / "runs",
                                         flags=["--machine.device-type", _device(), *flags], dataparser=["srn-data"])
        console.print(f"trained in {train_s:.0f} s: {config_path}")

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    for key, value in (params.get("eval_overrides") or {}).items():  # test-time settings, e.g. guidance_gain
        if not hasattr(pipeline.config, key):
            raise ValueError(f"eval_overrides: the ssdnerf pipeline has no setting {key!r}.")
        setattr(pipeline.config, key, tuple(value) if isinstance(value, list) else value)
    rows: List[Dict[str, Any]] = []
    for k in [int(v) for v in params.get("input_views", (1, 2))]:
        # per-setting overrides (e.g. variants_2v, num_objects_2v) keep the slower 2-view protocol affordable
        names = [str(n) for n in params.get(f"variants_{k}v") or params.get("variants") or [v[3] for v in VARIANTS]]
        variants = [v for v in VARIANTS if v[0] in names or v[3] in names]
        num_objects = int(params.get(f"num_objects_{k}v") or params.get("num_objects", -1))
        rows.extend(evaluate_variants(pipeline, k, variants, num_objects, console, train_s=train_s,
                                      first_object=int(params.get("first_object", 0)),
                                      partial=output_dir / "rows_partial.jsonl"))
    samples = int(params.get("num_samples", 8))
    if samples > 0:
        rows.append(generation_row(pipeline, samples, int(params.get("sample_num_steps", 50)), output_dir, train_s))
    return rows


def evaluate_variants(pipeline, num_inputs: int, variants: Sequence[Tuple[str, str, str, str, Dict[str, Any]]],
                      max_objects: int, console: Console, train_s: float = 0.0, first_object: int = 0,
                      partial: Optional[Path] = None) -> List[Dict[str, Any]]:
    """Score ``variants`` on held-out objects ``first_object, ...`` (``max_objects`` of them, -1: all the rest)
    from ``num_inputs`` views (the pipeline's test-time settings); variants with the same init start from the same
    codes. Returns one row per variant plus paired differences to the full method (also appended to ``partial``,
    one JSON line per row, as soon as a setting is done)."""
    import torch

    from ns_diffusion_methods.engine.progress import progress_bars
    from ns_diffusion_methods.methods.ssdnerf.metrics import image_metrics
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import (
        finetune_codes,
        initial_codes,
        input_rays,
        render_views,
    )

    model, dm, cfg = pipeline.model, pipeline.datamanager, pipeline.config
    available = dm.num_eval_objects - first_object
    num_objects = available if max_objects <= 0 else min(max_objects, available)
    if num_objects <= 0:
        raise ValueError(f"No held-out objects from index {first_object} on ({dm.num_eval_objects} in all).")
    base = pipeline.reconstruction_settings(num_inputs)
    per_object: Dict[str, Dict[str, List[float]]] = {v[0]: {} for v in variants}
    seconds: Dict[str, float] = {v[0]: 0.0 for v in variants}
    lpips_available = cfg.eval_lpips
    with progress_bars(console) as progress:
        task = progress.add_task(f"ssdnerf {num_inputs}v variants: objects", total=num_objects)
        end = first_object + num_objects
        for start in range(first_object, end, cfg.eval_batch_size):
            objects = [dm.eval_object(i, num_inputs) for i in range(start, min(start + cfg.eval_batch_size, end))]
            seed = cfg.eval_seed + start
            rays = input_rays(objects, torch.Generator().manual_seed(seed))
            inits: Dict[str, Tuple[torch.Tensor, float]] = {}
            for name, init, finetune, _, changes in variants:
                began = time.perf_counter()
                if init not in inits:
                    settings = _replace(base, init=init)
                    code = initial_codes(model, rays, settings, torch.Generator().manual_seed(seed + 1))
                    inits[init] = (code, time.perf_counter() - began)
                    began = time.perf_counter()
                code0, init_s = inits[init]
                settings = _replace(base, init=init, finetune=finetune, **changes)
                code = finetune_codes(model, code0, rays, settings, torch.Generator().manual_seed(seed + 2))
                stats = per_object[name]
                stats.setdefault("saturated_init", []).extend(model.saturated_fraction(code0).tolist())
                stats.setdefault("saturated_final", []).extend(model.saturated_fraction(code).tolist())
                for obj, obj_code in zip(objects, code):
                    scored = torch.as_tensor(obj.scored_views, dtype=torch.long)
                    renders = render_views(model, obj_code, obj.cameras[scored.to(obj.cameras.device)])
                    values: Dict[str, List[float]] = {}
                    for view, render in zip(obj.scored_views, renders):
                        for key, value in image_metrics(render, obj.images[view], with_lpips=lpips_available).items():
                            values.setdefault(key, []).append(value)
                    lpips_available = lpips_available and "lpips" in values
                    for key, vals in values.items():
                        stats.setdefault(key, []).append(sum(vals) / len(vals))
                seconds[name] += time.perf_counter() - began + init_s
            progress.advance(task, len(objects))
    rows = []
    for name, init, finetune, _, _ in variants:
        stats = per_object[name]
        row: Dict[str, Any] = {"variant": name, "views": num_inputs, "init": init, "finetune": finetune,
                               "objects": len(stats.get("psnr", []))}
        for key in ("psnr", "ssim"):
            mean, std, half = mean_interval(stats.get(key, []))
            row[key], row[f"{key}_std"], row[f"{key}_ci95"] = mean, std, half
        if lpips_available and "lpips" in stats:
            row["lpips"] = mean_interval(stats["lpips"])[0]
        else:
            row["lpips"] = "unavailable (VGG weights offline)" if cfg.eval_lpips else "not computed (eval_lpips off)"
        row["saturated_init"] = mean_interval(stats["saturated_init"])[0]
        row["saturated_final"] = mean_interval(stats["saturated_final"])[0]
        row["train_s"], row["eval_s"] = round(train_s, 1), round(seconds[name], 1)
        rows.append(row)
        console.print(f"  {num_inputs}v {name}: PSNR {row['psnr']:.2f} ± {row['psnr_ci95']:.2f}, SSIM "
                      f"{row['ssim']:.4f}, saturated {row['saturated_init']:.3f} -> {row['saturated_final']:.3f}")
    if FULL in per_object:
        full = per_object[FULL]["psnr"]
        for name, *_ in variants:
            if name == FULL:
                continue
            diffs = [a - b for a, b in zip(full, per_object[name]["psnr"])]
            mean, std, half = mean_interval(diffs)
            rows.append({"variant": f"paired: full - ({name})", "views": num_inputs, "psnr": mean, "psnr_std": std,
                         "psnr_ci95": half, "objects": len(diffs)})
    if partial is not None:
        with open(partial, "a") as stream:
            for row in rows:
                stream.write(json.dumps(row) + "\n")
    return rows


def generation_row(pipeline, samples: int, num_steps: int, output_dir: Path, train_s: float) -> Dict[str, Any]:
    """Unconditional samples: turntables in ``samples/`` and the silhouette/colour proxy against training images."""
    import torch

    from ns_diffusion_methods.methods.ssdnerf.sample import generate_codes, save_turntables, turntable_cameras

    model = pipeline.model
    start = time.perf_counter()
    codes = generate_codes(model, samples, num_steps, seed=0)
    cameras = turntable_cameras(pipeline.datamanager.train_dataset.cameras, 24).to(model.device)
    written = save_turntables(model, codes, cameras, output_dir / "samples")
    with torch.no_grad():
        renders = _render_all(model, codes, cameras)
        reference = pipeline.datamanager.train_images.float() / 255.0
        proxy = image_statistics_distance(renders.reshape(-1, *renders.shape[-3:]), reference)
    row: Dict[str, Any] = {"variant": f"generation: {samples} samples, DDIM {num_steps} steps "
                                      f"({written[0].relative_to(output_dir)})", "views": None}
    row.update({f"gen_{k}": v for k, v in proxy.items()})
    row["object_coverage"] = proxy["sample_coverage"]
    row["fid"] = "unavailable (Inception weights offline)"
    row["train_s"], row["eval_s"] = round(train_s, 1), round(time.perf_counter() - start, 1)
    return row


def _render_all(model, codes, cameras):
    import torch

    from ns_diffusion_methods.methods.ssdnerf.reconstruction import render_views

    return torch.stack([render_views(model, code, cameras).clamp(0, 1) for code in codes])


def image_statistics_distance(samples, reference, background_threshold: float = 0.95) -> Dict[str, float]:
    """A generation proxy that needs no network weights: compares the silhouette coverage (fraction of pixels that
    are not white background) and the mean colour of the object pixels of sample renders ``[N, H, W, 3]`` with those
    of reference images ``[M, H, W, 3]`` (both in [0, 1]).

    Returns the coverage of both, their absolute difference, the mean object colours' L2 distance, and the Fréchet
    distance between Gaussians fitted to the per-image (coverage, mean R, G, B) statistics.
    """
    import numpy as np

    def stats(images) -> np.ndarray:
        x = images.detach().cpu().numpy().astype(np.float64)
        mask = x.min(axis=-1) < background_threshold  # [N, H, W]
        coverage = mask.reshape(len(x), -1).mean(axis=1)
        colours = np.stack([(x[i][mask[i]].mean(axis=0) if mask[i].any() else np.ones(3)) for i in range(len(x))])
        return np.concatenate([coverage[:, None], colours], axis=1)

    a, b = stats(samples), stats(reference)
    return {"sample_coverage": float(a[:, 0].mean()), "data_coverage": float(b[:, 0].mean()),
            "coverage_gap": float(abs(a[:, 0].mean() - b[:, 0].mean())),
            "colour_distance": float(np.linalg.norm(a[:, 1:].mean(axis=0) - b[:, 1:].mean(axis=0))),
            "stats_frechet": frechet_distance(a, b)}


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` (``[N, D]`` arrays)."""
    import numpy as np
    from scipy import linalg

    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # singular covariances (e.g. identical statistics): offset, as pytorch-fid
        warnings.simplefilter("ignore")
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        if not np.isfinite(root).all():
            offset = np.eye(len(cov_a)) * 1e-6
            root, _ = linalg.sqrtm((cov_a + offset) @ (cov_b + offset), disp=False)
    root = root.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def _replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)


def _device() -> str:
    from ns_diffusion_methods.compat.device import default_device_type

    return default_device_type()


__all__ = ["VARIANTS", "evaluate_variants", "frechet_distance", "image_statistics_distance", "mean_interval", "run",
           "t95"]

