"""Benchmark ``renderdiffusion-objects``: RenderDiffusion against trivial baselines on the synthetic test objects.

Steps (run with ``ns-diffusion benchmark renderdiffusion-objects``):

1. write the synthetic ``objects`` dataset with the floor-and-shadows background;
2. train ``renderdiffusion-small`` with ``ns-train`` (in-process, the user's code path);
3. load the run as ``ns-eval`` does and, per held-out object:

   - single-view reconstruction from its input view (t_r from the model config, 0 by default), scored on every
     other view (PSNR/SSIM), against **copying the input view** to every novel view;
   - RePaint inpainting of a centred square of the input view, scored by PSNR inside the mask, against filling the
     square with the **mean colour** of the known pixels.

The reconstruction numbers come from the pipeline's own ``get_average_eval_image_metrics`` (what ``ns-eval``
reports). Rows hold the means over all scored views (reconstruction) or objects (inpainting).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import torch
from rich.console import Console

from ns_diffusion_methods.methods.renderdiffusion.pipeline import centre_square_mask
from ns_diffusion_methods.metrics.image import psnr_per_image, ssim


def _baselines_and_inpainting(pipeline, mask_fraction: float, seed: int, console: Console) -> Dict[str, float]:
    """Copy-input and mean-fill baselines, and RePaint inpainting, over every held-out object."""
    dm = pipeline.datamanager
    copy_psnr: List[float] = []
    copy_ssim: List[float] = []
    inpaint_psnr: List[float] = []
    fill_psnr: List[float] = []
    inpaint_novel: List[float] = []
    for obj in range(dm.num_eval_objects):
        views = dm.eval_object(obj, num_inputs=1)
        input_view = views.input_views[0]
        images = views.images.permute(0, 3, 1, 2)  # [V, 3, H, W]
        scored = views.scored_views
        source = images[input_view][None].expand(len(scored), -1, -1, -1)
        copy_psnr += psnr_per_image(source, images[scored]).tolist()
        copy_ssim += ssim(source, images[scored], reduction="none").tolist()

        H, W = images.shape[-2:]
        mask = centre_square_mask(H, W, mask_fraction, images.device)
        target = images[input_view][None]
        known = (1 - mask).expand_as(target)
        mean_colour = (target * known).sum(dim=(2, 3), keepdim=True) / known.sum(dim=(2, 3), keepdim=True)
        filled = target * known + mean_colour * (1 - known)
        fill_psnr.append(float(psnr_per_image(filled, target, mask)[0]))
        start = time.perf_counter()
        _, inpainted, renders = pipeline.inpaint_object(views, input_view, mask,
                                                        torch.Generator().manual_seed(seed + obj))
        inpaint_psnr.append(float(psnr_per_image(inpainted[None], target, mask)[0]))
        inpaint_novel += psnr_per_image(renders[scored], images[scored]).tolist()
        console.print(f"object {obj}: inpainting PSNR in mask {inpaint_psnr[-1]:.2f} dB (mean fill "
                      f"{fill_psnr[-1]:.2f} dB), {time.perf_counter() - start:.1f} s")

    def mean(values: List[float]) -> float:
        return float(torch.tensor(values, dtype=torch.float64).mean())

    return {"copy_psnr": mean(copy_psnr), "copy_ssim": mean(copy_ssim), "inpaint_psnr": mean(inpaint_psnr),
            "fill_psnr": mean(fill_psnr), "inpaint_novel_psnr": mean(inpaint_novel)}


def run(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """The benchmark entry (see the module docstring); ``spec["params"]`` sets sizes and iterations."""
    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run
    from ns_diffusion_methods.synthetic import write_objects

    params = dict(spec.get("params", {}))
    if params.get("num_threads"):
        torch.set_num_threads(int(params["num_threads"]))
    iterations = int(params.get("max_num_iterations", 2000))
    mask_fraction = float(params.get("mask_fraction", 0.375))
    seed = int(params.get("seed", 0))

    console.rule("[bold]Data[/bold]")
    data = write_objects(output_dir / "objects-floor", seed=seed, image_size=int(params.get("image_size", 32)),
                         num_train=int(params.get("num_train", 64)), num_test=int(params.get("num_test", 8)),
                         views=tuple(params.get("views", (16, 24))), background="floor")

    console.rule("[bold]Training renderdiffusion-small[/bold]")
    flags = ["--max-num-iterations", str(iterations), *[str(f) for f in params.get("flags", [])]]
    if not torch.cuda.is_available():
        flags = ["--machine.device-type", "cpu", *flags]
    config_path, train_s = train_run("renderdiffusion-small", data, output_dir / "run", flags)

    console.rule("[bold]Evaluation[/bold]")
    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    start = time.perf_counter()
    recon = pipeline.get_average_eval_image_metrics(output_path=output_dir / "reconstructions", get_std=True)
    recon_s = time.perf_counter() - start
    other = _baselines_and_inpainting(pipeline, mask_fraction, seed, console)
    t_r = int(pipeline.model.config.reconstruction_t_r)
    steps = pipeline.model.config.diffusion.num_inference_steps
    common = {"train_s": round(train_s, 1), "iterations": iterations, "s_per_iter": round(train_s / iterations, 3),
              "torch_threads": torch.get_num_threads()}
    return [
        {"task": f"single-view reconstruction, novel views (t_r={t_r})", "method": "renderdiffusion-small",
         "psnr": recon["psnr"], "ssim": recon["ssim"], "eval_s": round(recon_s, 1), **common},
        {"task": "single-view reconstruction, novel views", "method": "copy the input view",
         "psnr": other["copy_psnr"], "ssim": other["copy_ssim"]},
        {"task": f"inpainting, centred square {mask_fraction:g} (PSNR inside mask)",
         "method": f"renderdiffusion-small (RePaint, {steps} steps)", "psnr_masked": other["inpaint_psnr"],
         "psnr": other["inpaint_novel_psnr"]},
        {"task": f"inpainting, centred square {mask_fraction:g} (PSNR inside mask)", "method": "mean-colour fill",
         "psnr_masked": other["fill_psnr"]},
    ]
