"""The ``ssdnerf-objects`` benchmark: train ``ssdnerf-small`` on the synthetic ``objects`` data and compare
single-view reconstruction of the held-out objects with and without the learned prior, plus generation samples.

Steps, all through nerfstudio's own code paths:

1. write the synthetic ``objects`` dataset (white background, SRN layout);
2. train ``ssdnerf-small`` with ``ns-train``'s code path
(:func:`ns_diffusion_methods.benchmark.nerfstudio_runs.train_run`);
3. run ``ns-eval`` on the run (the full method, 1-view and 2-view protocol);
4. re-run the 1-view protocol of ``ns-eval`` (``pipeline.get_average_eval_image_metrics``) with the paper's
   ablation switches: guided sampling without fine-tuning, guided sampling + rendering-only fine-tuning,
   no prior at all (mean code + rendering-only fine-tuning), and the mean training code as it is;
5. generate new objects (unconditional DDIM) and write turntables to ``samples/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

from rich.console import Console

#: (row name, eval_init, eval_finetune) of the 1-view variants, in table order
VARIANTS = [
    ("full: guided sampling + fine-tuning with prior", "guided", "prior"),
    ("guided sampling + rendering-only fine-tuning (A2)", "guided", "render"),
    ("guided sampling only (A3)", "guided", "none"),
    ("rendering-only fine-tuning from the mean code (no prior)", "mean", "render"),
    ("mean code", "mean", "none"),
]


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """Run the benchmark; returns one row per evaluated variant plus one for generation."""
    import torch
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, train_run
    from ns_diffusion_methods.methods.ssdnerf.sample import generate_codes, save_turntables, turntable_cameras
    from ns_diffusion_methods.synthetic import write_objects

    params = dict(spec.get("params") or {})
    data_params = dict(params.get("dataset") or {})
    method = params.get("method", "ssdnerf-small")
    flags = [str(f) for f in params.get("flags") or []]
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. data
    console.print(f"[bold]ssdnerf-objects[/bold]: writing the objects dataset {data_params}")
    data = write_objects(output_dir / "data", seed=int(data_params.get("seed", 0)),
                         image_size=int(data_params.get("image_size", 32)),
                         num_train=int(data_params.get("num_train", 64)), num_test=int(data_params.get("num_test", 8)),
                         views=tuple(data_params.get("views", (16, 24))), background="white")

    # 2. training (ns-train)
    console.print(f"training {method} {' '.join(flags)}")
    config_path, train_s = train_run(method, data, output_dir / "runs", flags=["--machine.device-type",
                                                                               _device(), *flags],
                                     dataparser=["srn-data"])
    console.print(f"trained in {train_s:.0f} s: {config_path}")

    rows: List[Dict[str, Any]] = []
    # 3. ns-eval on the run: the full method, 1-view and 2-view
    start = time.perf_counter()
    full = eval_run(config_path, output_dir / "eval_full.json", render_output_path=output_dir / "renders_full")
    full_s = time.perf_counter() - start
    results = full["results"]
    for k in (1, 2):
        if f"psnr_{k}v" in results:
            rows.append(_row(f"full (ns-eval), {k} view{'s' if k > 1 else ''}", k, results, f"_{k}v", train_s,
                             full_s))

    # 4. the 1-view protocol with the ablation switches
    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    pipeline.config.eval_num_input_views = (1,)
    for name, init, finetune in VARIANTS:
        pipeline.config.eval_init, pipeline.config.eval_finetune = init, finetune
        start = time.perf_counter()
        metrics = pipeline.get_average_eval_image_metrics(get_std=True)
        rows.append(_row(name, 1, metrics, "_1v", train_s, time.perf_counter() - start))
        console.print(f"  {name}: PSNR {metrics['psnr_1v']:.2f}, SSIM {metrics['ssim_1v']:.4f}")

    # 5. generation
    samples = int(params.get("num_samples", 4))
    if samples > 0:
        model = pipeline.model
        start = time.perf_counter()
        num_steps = int(params.get("sample_num_steps", 50))
        codes = generate_codes(model, samples, num_steps, seed=0)
        cameras = turntable_cameras(pipeline.datamanager.train_dataset.cameras, 24).to(model.device)
        written = save_turntables(model, codes, cameras, output_dir / "samples")
        with torch.no_grad():
            coverage = _coverage(model, codes, cameras)
        rows.append({"variant": f"generation: {samples} samples, DDIM {num_steps} steps "
                                f"({written[0].relative_to(output_dir)})",
                     "views": None, "object_coverage": coverage, "train_s": round(train_s, 1),
                     "eval_s": round(time.perf_counter() - start, 1)})
    return rows


def _row(name: str, views: int, metrics: Dict[str, float], suffix: str, train_s: float,
         eval_s: float) -> Dict[str, Any]:
    row: Dict[str, Any] = {"variant": name, "views": views}
    for key in ("psnr", "ssim", "lpips"):
        if f"{key}{suffix}" in metrics:
            row[key] = metrics[f"{key}{suffix}"]
            row[f"{key}_std"] = metrics.get(f"{key}{suffix}_std")
    row["train_s"] = round(train_s, 1)
    row["eval_s"] = round(eval_s, 1)
    return row


def _coverage(model, codes, cameras) -> float:
    """Mean fraction of turntable pixels covered by the generated objects (accumulation > 0.5)."""
    from ns_diffusion_methods.methods.ssdnerf.reconstruction import camera_rays

    origins, directions = camera_rays(cameras)
    fractions = []
    for code in codes:
        out = model.render_rays_chunked(code[None], origins.reshape(1, -1, 3), directions.reshape(1, -1, 3),
                                        decoder=model.eval_decoder)
        fractions.append(float((out["accumulation"] > 0.5).float().mean()))
    return sum(fractions) / len(fractions)


def _device() -> str:
    from ns_diffusion_methods.compat.device import default_device_type

    return default_device_type()
