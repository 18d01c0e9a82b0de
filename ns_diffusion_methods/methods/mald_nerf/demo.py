"""``ns-diffusion demo`` (:class:`~ns_diffusion_methods.methods.mald_nerf.commands.DemoCommand`): remove an object
from a 3D capture with MALD-NeRF, on a CPU, in a few minutes.

1. writes the synthetic ``object-removal`` capture (a room with a removable object; training views show it and carry
   object masks, test views are rendered without it);
2. trains ``mald-nerf-small`` on it with the ``opencv`` inpainter (no weights, offline) through ``ns-train``'s own
   code path, with nerfstudio's progress table;
3. trains the control: the same run with no loss inside the object mask (``--pipeline.adversarial False``), so the
   hole is whatever the NeRF makes of the other views;
4. evaluates both on the test views with ``ns-eval`` (full-frame and masked metrics);
5. renders the captured view *with* the object at every test pose (what you would see without removal) and scores
   it the same way;
6. writes ``before_after.png`` (per test view: captured view with the object | MALD-NeRF render without it |
   ground truth) and ``metrics.json``, and prints where they are.

The verdict compares MALD-NeRF with both: the captured views (did the object go?) and the control (did the masked
adversarial loss fill the hole better than no loss there?), on masked PSNR and M-LPIPS where its weights are
available. The exit code is 0 when the renders beat the captured views inside the object region, 1 otherwise; whether
they also beat the control is printed and written to ``metrics.json`` (``better_than_control``), not part of the exit
code: with the OpenCV fills at the demo's size it is not guaranteed (see the method's README).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from rich.console import Console
from rich.table import Table

#: metric -> True if higher is better (the ones compared with the captured views)
COMPARED = {"masked_psnr": True, "m_lpips": False, "m_lpips_bbox": False}
#: the control's extra ``ns-train`` flags: no loss inside the object mask
CONTROL_FLAGS = ["--pipeline.adversarial", "False"]
#: all metrics shown in the comparison table
SHOWN = ("masked_psnr", "m_lpips", "m_lpips_bbox", "psnr", "ssim", "lpips", "mask_sharpness")


def inpainter_flags(inpainter: str) -> List[str]:
    """The ``ns-train`` arguments selecting ``inpainter`` ('opencv', or an LDM: 'tiny', a Hub id or a folder); they
    come after every other flag (a backend's flags follow its subcommand)."""
    if inpainter == "opencv":
        return ["pipeline.inpainter:opencv"]
    return ["pipeline.inpainter:ldm", "--pipeline.inpainter.model", inpainter]


def run_demo(output: Path, seed: int = 0, image_size: int = 64, num_views: int = 24, num_eval_views: int = 8,
             max_num_iterations: Optional[int] = None, inpainter: str = "opencv") -> int:
    """Run the demo (the steps of the module docstring) into ``output``; returns the exit code.

    Args:
        output: folder for the capture, the run, the picture and the metrics.
        seed: seed of the synthetic scene.
        image_size: image width in pixels (the height is 3/4 of it).
        num_views: training views (with the object and its mask).
        num_eval_views: test views (rendered without the object).
        max_num_iterations: training iterations; default is mald-nerf-small's.
        inpainter: 'opencv', 'tiny', or a diffusers inpainting model id or folder.
    """
    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, train_run
    from ns_diffusion_methods.compat.device import default_device_type

    console = Console()
    started = time.perf_counter()
    output = output.expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    capture = output / "capture"

    console.rule("[bold]1/5 Synthetic object-removal capture")
    _write_capture(capture, console, seed, image_size, num_views, num_eval_views)

    console.rule("[bold]2/5 Training mald-nerf-small")
    flags = ["--machine.device-type", default_device_type()]
    if max_num_iterations is not None:
        flags += ["--max-num-iterations", str(max_num_iterations)]
    console.print(f"Equivalent command: ns-train mald-nerf-small --data {capture} "
                  + " ".join([*flags, *inpainter_flags(inpainter)]))
    config_path, train_seconds = train_run("mald-nerf-small", capture, output / "runs",
                                           flags=[*flags, *inpainter_flags(inpainter)])

    console.rule("[bold]3/5 Training the control: no loss inside the object mask")
    control_flags = [*flags, *CONTROL_FLAGS, *inpainter_flags(inpainter)]
    console.print(f"Equivalent command: ns-train mald-nerf-small --data {capture} " + " ".join(control_flags))
    control_config, control_seconds = train_run("mald-nerf-small", capture, output / "runs-control",
                                                flags=control_flags)

    console.rule("[bold]4/5 Evaluating the test views (ns-eval)")
    renders = output / "renders"
    evaluation = eval_run(config_path, output_path=output / "eval.json", render_output_path=renders)
    rendered_metrics = {k: v for k, v in evaluation["results"].items() if not k.endswith("_std")}
    control = eval_run(control_config, output_path=output / "eval-control.json")
    control_metrics = {k: v for k, v in control["results"].items() if not k.endswith("_std")}

    console.rule("[bold]5/5 Comparison with the captured views (object still in them) and the control")
    captured_metrics, captured_images = _captured_baseline(capture, renders)
    picture = output / "before_after.png"
    write_before_after(captured_images, renders, picture)

    verdict = compare(rendered_metrics, captured_metrics)
    against_control = compare(rendered_metrics, control_metrics, other="control")
    report = {
        "method": "mald-nerf-small", "inpainter": inpainter, "config": str(config_path),
        "control_config": str(control_config), "train_seconds": train_seconds,
        "control_train_seconds": control_seconds, "total_seconds": time.perf_counter() - started,
        "mald_nerf": rendered_metrics, "captured_with_object": captured_metrics,
        "control_nothing_inside": control_metrics, "comparison": verdict, "comparison_control": against_control,
        "better_than_captured": all(v["better"] for v in verdict.values()) and bool(verdict),
        "better_than_control": all(v["better"] for v in against_control.values()) and bool(against_control),
    }
    metrics_path = output / "metrics.json"
    metrics_path.write_text(json.dumps(report, indent=2))
    _print_summary(console, report, picture, metrics_path, config_path)
    return 0 if report["better_than_captured"] else 1


# ------------------------------------------------------------------------------------------------------ steps
def _write_capture(capture: Path, console: Console, seed: int, image_size: int, num_views: int,
                   num_eval_views: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ns_diffusion_methods.synthetic import write_object_removal

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("Rendering views", total=num_views + num_eval_views)
        write_object_removal(capture, seed=seed, image_size=image_size, num_views=num_views,
                             num_eval_views=num_eval_views,
                             progress=lambda done, total: progress.update(task, completed=done, total=total))
    console.print(f"Capture written to {capture}")


def _captured_baseline(capture: Path, renders: Path) -> Tuple[Dict[str, float], List[torch.Tensor]]:
    """The test views as captured with the object still there, and their metrics against the ground truth."""
    from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
    from ns_diffusion_methods.methods.mald_nerf.evaluation import aggregate
    from ns_diffusion_methods.metrics import default_lpips, object_removal_metrics
    from ns_diffusion_methods.synthetic import render_nerfstudio_cameras
    from ns_diffusion_methods.synthetic.render import to_image_uint8
    from ns_diffusion_methods.synthetic.scene import Scene

    outputs = ObjectMaskDataParserConfig(data=capture).setup().get_dataparser_outputs("test")
    scene = Scene.from_json(capture / "scene.json")
    with_object = render_nerfstudio_cameras(scene, outputs.cameras, outputs.dataparser_transform,
                                            outputs.dataparser_scale, include_removable=True)
    images = [to_image_uint8(image).float() / 255.0 for image in with_object]  # as a camera would save them
    lpips = default_lpips()
    per_view = []
    for index, image in enumerate(images):
        gt = _read(renders / f"{index:04d}_gt.png")
        mask = _read(renders / f"{index:04d}_mask.png")[..., :1] > 0.5
        per_view.append(object_removal_metrics(_nchw(image), _nchw(gt), _nchw(mask), lpips=lpips))
    return aggregate(per_view, get_std=False), images


def _print_summary(console: Console, report: Dict, picture: Path, metrics_path: Path, config_path: Path) -> None:
    table = Table(title="Test views: MALD-NeRF render vs the captured view with the object (ground truth: "
                        "the view without it)")
    table.add_column("metric")
    table.add_column("captured (object still there)", justify="right")
    table.add_column("control: nothing inside the mask", justify="right")
    table.add_column("mald-nerf-small render", justify="right")
    table.add_column("better than captured / control", justify="center")
    ours, theirs, control = report["mald_nerf"], report["captured_with_object"], report["control_nothing_inside"]

    def mark(comparison: Dict, key: str) -> str:
        if key not in comparison:
            return "-"
        return "[green]yes[/green]" if comparison[key]["better"] else "[red]no[/red]"

    for key in SHOWN:
        if key not in ours and key not in theirs:
            continue
        marks = ""
        if key in COMPARED:
            marks = f"{mark(report['comparison'], key)} / {mark(report['comparison_control'], key)}"
        table.add_row(key, _fmt(theirs.get(key)), _fmt(control.get(key)), _fmt(ours.get(key)), marks)
    console.print(table)
    missing = [k for k in ("m_lpips", "m_lpips_bbox") if k not in ours]
    if missing:
        console.print(f"[yellow]{', '.join(missing)} unavailable: the LPIPS backbone weights could not be "
                      f"obtained (offline); masked PSNR is compared.[/yellow]")
    verdict = ("[bold green]The rendered test views score better than the captured views inside the object "
               "region.[/bold green]" if report["better_than_captured"] else
               "[bold red]The rendered test views do NOT score better than the captured views.[/bold red]")
    console.print(verdict)
    if report["better_than_control"]:
        console.print("[bold green]The masked adversarial loss fills the hole better than no loss inside the mask "
                      "(the control).[/bold green]")
    else:
        console.print("[bold yellow]The masked adversarial loss does NOT fill the hole better than no loss inside "
                      "the mask (the control) on every compared metric.[/bold yellow]")
    console.print(f"Before/after picture: {picture}\n  (per test view: captured with the object | rendered "
                  f"without it | ground truth)")
    console.print(f"Metrics:              {metrics_path}")
    console.print(f"Run (ns-viewer / ns-render --load-config): {config_path}")
    console.print(f"Total time: {report['total_seconds']:.0f} s (training {report['train_seconds']:.0f} s, control "
                  f"{report['control_train_seconds']:.0f} s)")


def compare(ours: Dict[str, float], captured: Dict[str, float], other: str = "captured_with_object"
            ) -> Dict[str, Dict]:
    """Per compared metric available on both sides: both values (the other side's under ``other``) and whether the
    render is better."""
    verdict = {}
    for key, higher in COMPARED.items():
        if key in ours and key in captured and math.isfinite(ours[key]) and math.isfinite(captured[key]):
            better = ours[key] > captured[key] if higher else ours[key] < captured[key]
            verdict[key] = {"mald_nerf": ours[key], other: captured[key], "better": bool(better)}
    return verdict


def write_before_after(captured: List[torch.Tensor], renders: Path, path: Path, scale: int = 4) -> None:
    """One row per test view: captured view with the object | rendered | ground truth, upscaled ``scale`` x."""
    from ns_diffusion_methods.data.images import resize_array, save_image

    rows = []
    for index, before in enumerate(captured):
        rendered = _read(renders / f"{index:04d}_rendered.png")
        gt = _read(renders / f"{index:04d}_gt.png")
        gap = torch.ones(before.shape[0], 2, 3)
        rows.append(torch.cat([before, gap, rendered, gap, gt], dim=1))
        rows.append(torch.ones(2, rows[-1].shape[1], 3))
    grid = torch.cat(rows[:-1], dim=0)
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    height, width = array.shape[:2]
    save_image(resize_array(array, (height * scale, width * scale), resample="nearest"), path)


def _read(path: Path) -> torch.Tensor:
    """An image file as ``[H, W, 3]`` in [0, 1]."""
    from ns_diffusion_methods.data.images import load_image

    return load_image(path).permute(1, 2, 0)


def _nchw(image: torch.Tensor) -> torch.Tensor:
    return image.permute(2, 0, 1)[None].float()


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"
