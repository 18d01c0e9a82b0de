"""Benchmark ``mald-nerf-oracle``: what supervises the inpainted region best when the 2D inpaintings disagree?

The question (MALD-NeRF's central claim): with view-inconsistent inpaintings, pixel and perceptual losses
inside the mask average the disagreement into blur, a masked adversarial loss does not. To isolate the loss from the
quality of an inpainting model, every variant trains on the same **oracle** inpaintings:

- the oracle fill of a training view is the true background (the synthetic scene rendered without the removable
  object at that pose), made **view-inconsistent** the way diffusion inpaintings are: a per-view colour shift
  (per-channel gain and offset) and a per-view texture jitter (the background translated by a few pixels);
- only the object region is replaced; captured pixels stay untouched.

The fills are written to a file (:func:`write_oracle`) and read by the oracle inpainting backend
(:mod:`ns_diffusion_methods.inpainters.oracle`), selected like any backend:
``pipeline.inpainter:oracle --pipeline.inpainter.oracle-file FILE``.

An integration check of the whole chain on one seed: the evidence over seeds, with hallucinating fills and a
capture whose hole no training view shows, is ``mald-nerf-evidence``
(:mod:`~ns_diffusion_methods.methods.mald_nerf.evidence`).

Variants (``mald-nerf-small`` sizes, identical except for the loss inside the mask):

- ``masked adversarial``: the paper's method (masked non-saturating GAN loss + feature matching, lazy R1);
- ``nothing inside``: no loss inside the mask (the control: the hole is what the NeRF makes of the other views);
- ``L1 inside``: no adversarial loss, L1 against the oracle fills inside the mask;
- ``LPIPS inside``: no adversarial loss, LPIPS against the (masked) oracle fills; needs the LPIPS backbone weights and
  is reported as not run without them;
- ``nerfacto``: stock nerfacto at the same sizes and rays per step on the same capture (no removal at all), for the
  time per iteration and as a no-removal reference.

Scores on the object-free test views (``ns-eval``): masked PSNR, M-LPIPS (both definitions, when available),
the variance of the Laplacian inside the mask (``mask_sharpness``; the ground truth's is ``mask_sharpness_gt``), plus
full-frame PSNR/SSIM, and the time per training iteration.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: default parameters (override with ``ns-diffusion benchmark mald-nerf-oracle --set KEY=VALUE``)
DEFAULTS: Dict[str, Any] = {
    "seed": 0,
    "image_size": 64,
    "num_views": 24,
    "num_eval_views": 8,
    "max_num_iterations": 600,
    "colour_shift": 0.12,
    "jitter_px": 2,
}


# ------------------------------------------------------------------------------------------------ the oracle
def view_inconsistent(background: Tensor, generator: torch.Generator, colour_shift: float, jitter_px: int) -> Tensor:
    """The background ``[H, W, 3]`` with a random per-channel gain/offset and a random translation (texture jitter).

    Gain ~ U(1 - s, 1 + s), offset ~ U(-s/2, s/2) per channel; the translation is up to ``jitter_px`` pixels along
    each axis, with replicated borders.
    """
    gain = 1 + (torch.rand(3, generator=generator) * 2 - 1) * colour_shift
    offset = (torch.rand(3, generator=generator) - 0.5) * colour_shift
    dy, dx = (int(v) for v in torch.randint(-jitter_px, jitter_px + 1, (2,), generator=generator))
    pad = jitter_px
    image = F.pad(background.permute(2, 0, 1)[None], (pad, pad, pad, pad), mode="replicate")[0]
    height, width = background.shape[:2]
    shifted = image[:, pad + dy:pad + dy + height, pad + dx:pad + dx + width].permute(1, 2, 0)
    return (shifted * gain + offset).clamp(0, 1)


def hallucinate(background: Tensor, generator: torch.Generator, colour_shift: float,
                shift_range: Tuple[float, float] = (0.2, 0.4)) -> Tensor:
    """A plausible but wrong fill for one view: the background ``[H, W, 3]`` moved by a large random offset (so the
    hole shows floor, wall or objects from elsewhere in the room), mirrored left-right half of the time, and
    recoloured as :func:`view_inconsistent` does.

    The offset's length is drawn in ``shift_range`` (fractions of the image width, at most just under the image
    height), its direction uniformly; borders are reflected. Every view draws its own offset, so the fills of two
    views show different content in the hole and neither shows what is really there, as a diffusion inpainter's
    hallucinations do.
    """
    height, width = background.shape[:2]
    low, high = shift_range
    length = (low + (high - low) * float(torch.rand((), generator=generator))) * width
    length = min(length, height - 1)
    angle = 2 * math.pi * float(torch.rand((), generator=generator))
    dy, dx = int(round(length * math.sin(angle))), int(round(length * math.cos(angle)))
    flip = bool(torch.rand((), generator=generator) < 0.5)
    gain = 1 + (torch.rand(3, generator=generator) * 2 - 1) * colour_shift
    offset = (torch.rand(3, generator=generator) - 0.5) * colour_shift
    pad_y, pad_x = abs(dy), abs(dx)
    image = F.pad(background.permute(2, 0, 1)[None], (pad_x, pad_x, pad_y, pad_y), mode="reflect")[0]
    moved = image[:, pad_y + dy:pad_y + dy + height, pad_x + dx:pad_x + dx + width]
    if flip:
        moved = moved.flip(-1)
    return (moved.permute(1, 2, 0) * gain + offset).clamp(0, 1)


OracleKind = Literal["consistent", "hallucinating"]


def write_oracle(capture: Path, path: Path, seed: int, colour_shift: float, jitter_px: int,
                 kind: OracleKind = "consistent", shift_range: Tuple[float, float] = (0.2, 0.4)) -> Dict[str, float]:
    """Render the oracle fills of every training view of ``capture`` into ``path``; returns their masked PSNR
    against the true background and the sharpness (variance of the Laplacian) inside the masks of fills and truth.

    ``kind``: ``consistent`` fills are the true background with a colour shift and a jitter of at most
    ``jitter_px`` (:func:`view_inconsistent`); ``hallucinating`` fills show other content in every view
    (:func:`hallucinate`, offsets in ``shift_range``).
    """
    from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
    from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
    from ns_diffusion_methods.metrics import mask_sharpness, masked_psnr
    from ns_diffusion_methods.synthetic import render_nerfstudio_cameras
    from ns_diffusion_methods.synthetic.render import to_image_uint8
    from ns_diffusion_methods.synthetic.scene import Scene

    outputs = ObjectMaskDataParserConfig(data=capture).setup().get_dataparser_outputs("train")
    dataset = ObjectMaskDataset(outputs)
    scene = Scene.from_json(capture / "scene.json")
    backgrounds = render_nerfstudio_cameras(scene, outputs.cameras, outputs.dataparser_transform,
                                            outputs.dataparser_scale, include_removable=False)
    generator = torch.Generator().manual_seed(seed)
    captured, fills, truth, masks = [], [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        background = to_image_uint8(backgrounds[index]).float() / 255.0
        if kind == "consistent":
            fill = view_inconsistent(background, generator, colour_shift, jitter_px)
        elif kind == "hallucinating":
            fill = hallucinate(background, generator, colour_shift, shift_range)
        else:
            raise ValueError(f"`kind` must be 'consistent' or 'hallucinating', but got {kind!r}.")
        captured.append(to_image_uint8(item["image"]))
        fills.append(to_image_uint8(fill))
        truth.append(background)
        masks.append(item["object_mask"])
    torch.save({"captured": torch.stack(captured), "fills": torch.stack(fills)}, path)
    nchw = lambda xs: torch.stack(xs).permute(0, 3, 1, 2).float()  # noqa: E731
    fill_images = nchw([f.float() / 255.0 for f in fills])
    hole = nchw(masks).bool()
    return {"masked_psnr": float(masked_psnr(fill_images, nchw(truth), hole)),
            "mask_sharpness": float(mask_sharpness(fill_images, hole)),
            "mask_sharpness_gt": float(mask_sharpness(nchw(truth), hole))}


# ------------------------------------------------------------------------------------------------ runs
def _train_with_oracle(capture: Path, output: Path, oracle_file: Path, flags: Sequence[str]) -> Path:
    """``ns-train mald-nerf-small [flags] pipeline.inpainter:oracle --pipeline.inpainter.oracle-file FILE``; returns
    the run's config.yml."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import train_run

    oracle = ["pipeline.inpainter:oracle", "--pipeline.inpainter.oracle-file", str(oracle_file)]
    config_path, _ = train_run("mald-nerf-small", capture, output, flags=[*flags, *oracle])
    return config_path


def _reset_profiler() -> None:
    from nerfstudio.utils import profiler

    for item in profiler.PROFILER:
        item.profiler_dict.clear()


def _seconds_per_iteration() -> Optional[float]:
    """Mean duration of nerfstudio's ``Trainer.train_iteration`` in the last run (the optimisation step alone)."""
    from nerfstudio.utils import profiler

    if not profiler.PROFILER:
        return None
    entry = profiler.PROFILER[0].profiler_dict.get("Trainer.train_iteration")
    return None if entry is None else float(entry["val"])


def run(spec: Dict[str, Any], output_dir: Path, console) -> List[Dict[str, Any]]:
    """Run the benchmark (see the module docstring); returns one row per variant."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run
    from ns_diffusion_methods.metrics.lpips import lpips_metric
    from ns_diffusion_methods.synthetic import write_object_removal

    params = {**DEFAULTS, **(spec.get("params") or {})}
    iterations = int(params["max_num_iterations"])
    output_dir = Path(output_dir)
    capture = output_dir / "capture"
    console.print(f"Writing the object-removal capture to {capture}")
    write_object_removal(capture, seed=int(params["seed"]), image_size=int(params["image_size"]),
                         num_views=int(params["num_views"]), num_eval_views=int(params["num_eval_views"]))
    oracle_file = output_dir / "oracle.pt"
    oracle = write_oracle(capture, oracle_file, int(params["seed"]), float(params["colour_shift"]),
                          int(params["jitter_px"]))
    console.print(f"Oracle fills: masked PSNR {oracle['masked_psnr']:.2f} dB against the true background "
                  f"(colour shift {params['colour_shift']}, jitter {params['jitter_px']} px)")

    common = ["--max-num-iterations", str(iterations), "--steps-per-save", str(iterations),
              "--machine.device-type", "cpu" if not torch.cuda.is_available() else "cuda"]
    variants = [
        ("masked adversarial", "adversarial (masked)", []),
        ("nothing inside", "none (control)", ["--pipeline.adversarial", "False"]),
        ("L1 inside", "L1", ["--pipeline.adversarial", "False", "--pipeline.model.inside-l1-loss-mult", "1.0"]),
        ("LPIPS inside", "LPIPS", ["--pipeline.adversarial", "False", "--pipeline.inside-lpips-loss-mult", "1.0"]),
    ]
    rows: List[Dict[str, Any]] = []
    for name, inside, flags in variants:
        row: Dict[str, Any] = {"name": name, "loss_inside": inside}
        if "LPIPS" in name and not getattr(lpips_metric(normalize=True), "available", True):
            row["status"] = "not run: LPIPS backbone weights unavailable offline"
            rows.append(row)
            console.print(f"[yellow]{name}: {row['status']}[/yellow]")
            continue
        console.rule(name)
        _reset_profiler()
        start = time.perf_counter()
        config = _train_with_oracle(capture, output_dir / "runs" / name.replace(" ", "-"), oracle_file,
                                    [*common, *flags])
        row["train_s"] = time.perf_counter() - start
        row["s_per_iter"] = _seconds_per_iteration()
        row.update(_scores(eval_run(config)["results"]))
        row["status"] = "ok"
        rows.append(row)

    console.rule("nerfacto (stock model and losses, same sizes)")
    _reset_profiler()
    start = time.perf_counter()
    config = _train_nerfacto(capture, output_dir / "runs" / "nerfacto", iterations)
    row = {"name": "nerfacto", "loss_inside": "none (no removal)", "train_s": time.perf_counter() - start,
           "s_per_iter": _seconds_per_iteration()}
    row.update(_scores(eval_run(config, keep_saved_datamanager=True)["results"]))
    row["status"] = "ok"
    rows.append(row)
    rows.append({"name": "oracle fills (training views)", "loss_inside": "-", "masked_psnr": oracle["masked_psnr"],
                 "status": "reference: the inconsistent targets themselves"})
    return rows


def _scores(results: Dict[str, float]) -> Dict[str, float]:
    keys = ("masked_psnr", "m_lpips", "m_lpips_bbox", "mask_sharpness", "mask_sharpness_gt", "psnr", "ssim", "lpips",
            "fid", "kid")
    return {key: results[key] for key in keys if key in results}


def _train_nerfacto(capture: Path, output: Path, iterations: int) -> Path:
    """Stock nerfacto (its model, losses and optimisers) at mald-nerf-small's sizes and rays per step.

    The datamanager is nerfstudio's VanillaDataManager (as mald-nerf's), not nerfacto's default parallel one, whose
    worker process would compete for the same CPU cores and blur the time comparison.
    """
    import copy

    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.models.nerfacto import NerfactoModelConfig
    from nerfstudio.scripts.train import main

    from ns_diffusion_methods.compat import package_run
    from ns_diffusion_methods.methods.mald_nerf.config import mald_nerf_small_config as small

    config = copy.deepcopy(method_configs["nerfacto"])
    mald_model, mald_dm = small.pipeline.model, small.pipeline.datamanager
    shared = {name: getattr(mald_model, name) for name in NerfactoModelConfig.__dataclass_fields__
              if name != "_target"}
    config.pipeline.model = NerfactoModelConfig(**copy.deepcopy(shared))
    rays = mald_dm.train_num_rays_per_batch + mald_dm.num_mask_patches * mald_dm.mask_patch_size ** 2
    config.pipeline.datamanager = VanillaDataManagerConfig(
        dataparser=NerfstudioDataParserConfig(data=capture, eval_mode="filename"), data=capture,
        train_num_rays_per_batch=rays, eval_num_rays_per_batch=rays)
    config.optimizers = {k: v for k, v in copy.deepcopy(small.optimizers).items() if k != "discriminator"}
    config.output_dir = output
    config.max_num_iterations = iterations
    config.steps_per_save = iterations
    config.steps_per_eval_image = small.steps_per_eval_image
    config.steps_per_eval_batch = small.steps_per_eval_batch
    config.steps_per_eval_all_images = small.steps_per_eval_all_images
    config.mixed_precision = small.mixed_precision
    config.machine.device_type = small.machine.device_type
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.timestamp = "run"
    with package_run():  # stock nerfacto builds LPIPS: unavailable offline instead of a failed run
        main(config)
    return config.get_base_dir() / "config.yml"
