"""Benchmark ``renderdiffusion-objects``: does RenderDiffusion reconstruct the object it is shown?

Steps (``ns-diffusion benchmark renderdiffusion-objects``):

1. write varied single objects on a floor (:mod:`ns_diffusion_methods.synthetic.varied_objects`: shape, size,
   colour and placement vary widely; every view has an object mask, the pixels the object and its shadow change);
2. train ``renderdiffusion-small`` with ``ns-train`` (in-process, the user's code path), once per training seed;
3. load each run as ``ns-eval`` does and score, per held-out object and per scored view (every view but the input
   view 0), PSNR over the whole image (``psnr``), PSNR over the object's pixels (``psnr_object``) and SSIM:

   - **renderdiffusion-small**: single-view reconstruction from the object's input view (t_r from the model config);
   - **copy the input view** and the **input blurred** (Gaussian σ = 1): baselines that use the input;
   - **mean of the k training images with the nearest cameras** and **mean of the other test objects at the same
     view**: input-free baselines, i.e. what a model that ignores its input and learned the dataset's average
     layout would produce;
   - **input swap** (control): the model reconstructs from *another* test object's input view (same camera) and is
     scored against this object's views. A model that reconstructs loses here; one that ignores its input does not.

   Inpainting: RePaint of a centred square of the input view (the model) against the **per-pixel mean of all
   training images** (input-free) and the **mean colour of the known pixels**, scored inside the square (``psnr``)
   and inside the square on the object's pixels (``psnr_object``).

Rows hold means over (seed, object) pairs of the per-object means, with their standard deviation across objects
(``*_std``). ``paired difference`` rows give, per object, the model's PSNR minus a baseline's, averaged, with the
standard deviation and a 95 % interval of the mean (normal approximation) across objects: these are the numbers
that decide whether the model uses its input.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.methods.renderdiffusion.pipeline import centre_square_mask
from ns_diffusion_methods.metrics.image import masked_psnr, psnr_per_image, ssim

RECON = "single-view reconstruction, novel views"
INPAINT = "inpainting, centred square (inside the square)"
MODEL = "renderdiffusion-small"


def nearest_camera_means(train_positions: Tensor, train_images: Tensor, positions: Tensor, k: int) -> Tensor:
    """Mean of the ``k`` training images whose camera centres are nearest each query position.

    Args:
        train_positions: ``[N, 3]`` training camera centres.
        train_images: ``[N, H, W, 3]`` (any dtype; averaged as float in [0, 1] when uint8).
        positions: ``[V, 3]`` query camera centres.
        k: images averaged per query.

    Returns:
        ``[V, 3, H, W]`` in [0, 1].
    """
    distances = torch.cdist(positions.double(), train_positions.double())  # [V, N]
    nearest = distances.topk(min(k, train_positions.shape[0]), largest=False).indices  # [V, k]
    images = train_images.float()
    if train_images.dtype == torch.uint8:
        images = images / 255.0
    return images[nearest].mean(dim=1).permute(0, 3, 1, 2)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """``[B, 3, H, W]`` blurred with a Gaussian of ``sigma`` pixels (kernel of 2·ceil(3σ)+1 taps, reflected edges)."""
    from torchvision.transforms.functional import gaussian_blur as blur

    if sigma <= 0:
        return images
    size = 2 * math.ceil(3 * sigma) + 1
    return blur(images, kernel_size=[size, size], sigma=[sigma, sigma])


def score_views(pred: Tensor, gt: Tensor, object_masks: Tensor) -> Dict[str, float]:
    """Means over views of PSNR, PSNR on the object's pixels (views where the mask is empty are skipped) and SSIM.

    Args:
        pred, gt: ``[V, 3, H, W]`` in [0, 1].
        object_masks: ``bool [V, 1, H, W]``.
    """
    object_psnr = masked_psnr(pred, gt, object_masks, reduction="none")
    return {"psnr": float(psnr_per_image(pred, gt).mean()),
            "psnr_object": float(object_psnr[~object_psnr.isnan()].mean()),
            "ssim": float(ssim(pred, gt, reduction="none").mean())}


def _stats(values: List[float]) -> Dict[str, float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    std = float(tensor.std()) if tensor.numel() > 1 else 0.0
    return {"mean": float(tensor.mean()), "std": std, "ci95": 1.96 * std / math.sqrt(max(1, tensor.numel()))}


def evaluate_run(pipeline, data: Path, params: Dict[str, Any], console: Console,
                 progress: Optional[Callable[[int, int], None]] = None) -> Dict[str, Dict[str, List[float]]]:
    """Score the model and every baseline on each held-out object of a loaded RenderDiffusion pipeline.

    Returns:
        ``{(task, method) key: {metric: [per-object value]}}`` with keys ``"<task>|<method>"``.
    """
    from ns_diffusion_methods.methods.renderdiffusion.pipeline import camera_tensors
    from ns_diffusion_methods.synthetic.varied_objects import read_object_masks

    dm = pipeline.datamanager
    model = pipeline.model
    k = int(params.get("nearest_k", 16))
    sigma = float(params.get("blur_sigma", 1.0))
    mask_fraction = float(params.get("mask_fraction", 0.375))
    seed = int(params.get("eval_seed", 0))
    max_objects = int(params.get("eval_objects", -1))
    inpaint_objects = int(params.get("inpaint_objects", -1))
    num_objects = dm.num_eval_objects if max_objects < 0 else min(max_objects, dm.num_eval_objects)
    if num_objects < 2:
        raise ValueError("The benchmark needs at least 2 held-out objects (the same-view mean and the input swap use "
                         "the others); raise `num_test`.")
    train_c2w, _ = camera_tensors(dm.train_dataset.cameras)
    train_positions = train_c2w[:, :, 3].cpu()
    train_images = dm.train_images.cpu()
    train_mean = (train_images.float() / 255.0).mean(dim=0).permute(2, 0, 1)  # [3, H, W]

    objects = [dm.eval_object(obj, num_inputs=1) for obj in range(num_objects)]
    stack = torch.stack([v.images.permute(0, 3, 1, 2).cpu() for v in objects])  # [O, V, 3, H, W]
    masks = torch.stack([read_object_masks(data, "test", v.name, v.images.shape[0]) for v in objects])
    results: Dict[str, Dict[str, List[float]]] = {}

    def add(task: str, method: str, scores: Dict[str, float]) -> None:
        entry = results.setdefault(f"{task}|{method}", {})
        for key, value in scores.items():
            entry.setdefault(key, []).append(value)

    nearest_cache: Dict[int, Tensor] = {}
    for obj, views in enumerate(objects):
        start = time.perf_counter()
        input_view = views.input_views[0]
        scored = views.scored_views
        gt, obj_masks = stack[obj][scored], masks[obj][scored]
        source = stack[obj][input_view]
        generator = torch.Generator().manual_seed(seed + obj)
        _, renders = pipeline.reconstruct_object(views, input_view, generator)
        add(RECON, MODEL, score_views(renders[scored].cpu(), gt, obj_masks))
        add(RECON, "copy the input view", score_views(source.expand_as(gt), gt, obj_masks))
        add(RECON, f"input blurred (sigma {sigma:g})", score_views(gaussian_blur(source[None], sigma).expand_as(gt),
                                                                  gt, obj_masks))
        c2w, _ = camera_tensors(views.cameras)
        key = len(scored)
        if key not in nearest_cache:  # test views are a ring shared by every object
            nearest_cache[key] = nearest_camera_means(train_positions, train_images, c2w[scored, :, 3].cpu(), k)
        add(RECON, f"mean of the {k} nearest-camera training images (no input)",
            score_views(nearest_cache[key], gt, obj_masks))
        others = torch.cat([stack[:obj], stack[obj + 1:]])[:, scored].mean(dim=0)
        add(RECON, "same-view mean of the other test objects (no input)", score_views(others, gt, obj_masks))
        other = (obj + 1) % num_objects
        swapped_images = views.images.clone()
        swapped_images[input_view] = objects[other].images[objects[other].input_views[0]]
        _, swap_renders = pipeline.reconstruct_object(dataclasses.replace(views, images=swapped_images), input_view,
                                                      torch.Generator().manual_seed(seed + obj))
        add(RECON, "input swap: model fed another object's view (control)",
            score_views(swap_renders[scored].cpu(), gt, obj_masks))

        if inpaint_objects < 0 or obj < inpaint_objects:
            H, W = source.shape[-2:]
            square = centre_square_mask(H, W, mask_fraction)  # [1, 1, H, W]
            target = source[None]
            in_object = square.bool() & masks[obj][input_view][None]
            known = 1 - square
            mean_colour = (target * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True)
            _, inpainted, _ = pipeline.inpaint_object(views, input_view, square.to(model.device),
                                                      torch.Generator().manual_seed(10_000 + seed + obj))
            for method, fill in ((f"{MODEL} (RePaint, {model.config.diffusion.num_inference_steps} steps)",
                                  inpainted[None].cpu()),
                                 ("per-pixel mean of the training images (no input)", train_mean[None]),
                                 ("mean colour of the known pixels", mean_colour.expand_as(target))):
                filled = target * known + fill * square
                add(INPAINT, method, {"psnr": float(masked_psnr(filled, target, square.bool())),
                                      "psnr_object": float(masked_psnr(filled, target, in_object))})
        console.print(f"object {obj} ({views.name}): model {results[f'{RECON}|{MODEL}']['psnr_object'][-1]:.2f} dB "
                      f"on object pixels, {time.perf_counter() - start:.1f} s")
        if progress is not None:
            progress(obj + 1, num_objects)
    return results


def summarise(per_seed: List[Dict[str, Dict[str, List[float]]]]) -> List[Dict[str, Any]]:
    """Rows from the per-object scores of every seed (see the module docstring)."""
    merged: Dict[str, Dict[str, List[float]]] = {}
    for results in per_seed:
        for key, metrics in results.items():
            for metric, values in metrics.items():
                merged.setdefault(key, {}).setdefault(metric, []).extend(values)
    rows: List[Dict[str, Any]] = []
    for key, metrics in merged.items():
        task, method = key.split("|", 1)
        row: Dict[str, Any] = {"task": task, "method": method}
        for metric in ("psnr", "psnr_object", "ssim"):
            if metric in metrics:
                stats = _stats(metrics[metric])
                row[metric], row[f"{metric}_std"] = round(stats["mean"], 3), round(stats["std"], 3)
        if len(per_seed) > 1 and "psnr_object" in metrics:
            seed_means = [float(torch.tensor(r[key]["psnr_object"]).mean()) for r in per_seed if key in r]
            row["psnr_object_seed_std"] = round(_stats(seed_means)["std"], 3)
        row["n"] = len(next(iter(metrics.values())))
        rows.append(row)

    def paired(task: str, model_key: str, baseline_key: str, label: str) -> None:
        a, b = merged.get(f"{task}|{model_key}"), merged.get(f"{task}|{baseline_key}")
        if a is None or b is None:
            return
        row: Dict[str, Any] = {"task": f"paired difference: {task}", "method": label}
        for metric in ("psnr", "psnr_object"):
            diff = [x - y for x, y in zip(a[metric], b[metric])]
            stats = _stats(diff)
            row[metric], row[f"{metric}_std"] = round(stats["mean"], 3), round(stats["std"], 3)
            row[f"{metric}_ci95"] = round(stats["ci95"], 3)
        row["n"] = len(a["psnr"])
        rows.append(row)

    recon_methods = [key.split("|", 1)[1] for key in merged if key.startswith(RECON + "|")]
    free = [m for m in recon_methods if "(no input)" in m]
    if free:
        best = max(free, key=lambda m: float(torch.tensor(merged[f"{RECON}|{m}"]["psnr_object"]).mean()))
        paired(RECON, MODEL, best, f"model - best input-free baseline ({best})")
    swap = [m for m in recon_methods if m.startswith("input swap")]
    if swap:
        paired(RECON, MODEL, swap[0], "model - input swap (what the input is worth)")
    inpaint_methods = [key.split("|", 1)[1] for key in merged if key.startswith(INPAINT + "|")]
    model_inpaint = [m for m in inpaint_methods if m.startswith(MODEL)]
    if model_inpaint:
        paired(INPAINT, model_inpaint[0], "per-pixel mean of the training images (no input)",
               "model - per-pixel training mean")
    return rows


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """The benchmark entry (see the module docstring); ``spec["params"]`` sets sizes, iterations and seeds."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run
    from ns_diffusion_methods.engine.progress import progress_bars
    from ns_diffusion_methods.synthetic.varied_objects import write_varied_objects

    params = dict(spec.get("params", {}))
    if params.get("num_threads"):
        torch.set_num_threads(int(params["num_threads"]))
    iterations = int(params.get("max_num_iterations", 4000))
    seeds = [int(s) for s in params.get("train_seeds", [0])]

    console.rule("[bold]Data[/bold]")
    data = write_varied_objects(output_dir / "varied-objects", seed=int(params.get("data_seed", 0)),
                                image_size=int(params.get("image_size", 32)),
                                num_train=int(params.get("num_train", 256)), num_test=int(params.get("num_test", 32)),
                                views=tuple(params.get("views", (16, 24))))
    per_seed = []
    timings: List[Dict[str, float]] = []
    for seed in seeds:
        console.rule(f"[bold]Training {MODEL} (seed {seed})[/bold]")
        flags = ["--max-num-iterations", str(iterations), "--machine.seed", str(seed),
                 *[str(f) for f in params.get("flags", [])]]
        if not torch.cuda.is_available():
            flags = ["--machine.device-type", "cpu", *flags]
        config_path, train_s = train_run(MODEL, data, output_dir / f"run-seed{seed}", flags)
        console.rule(f"[bold]Evaluation (seed {seed})[/bold]")
        _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
        if params.get("t_r") is not None:
            pipeline.model.config.reconstruction_t_r = int(params["t_r"])
        start = time.perf_counter()
        with progress_bars(console) as bars:
            task = bars.add_task("objects", total=None)
            results = evaluate_run(pipeline, data, params, console,
                                   lambda done, total: bars.update(task, completed=done, total=total))
        per_seed.append(results)
        timings.append({"train_s": train_s, "eval_s": time.perf_counter() - start})
    rows = summarise(per_seed)
    train_s = sum(t["train_s"] for t in timings)
    extra = {"t_r": int(params["t_r"]) if params.get("t_r") is not None else 0, "iterations": iterations,
             "train_seeds": ",".join(str(s) for s in seeds), "train_s": round(train_s, 1),
             "s_per_iter": round(train_s / (iterations * len(seeds)), 3),
             "eval_s": round(sum(t["eval_s"] for t in timings), 1), "torch_threads": torch.get_num_threads()}
    rows[0].update(extra)
    return rows
