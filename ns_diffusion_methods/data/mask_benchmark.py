"""The ``object-masks`` benchmark: are masks from a 3D box (``ns-diffusion masks``) as good as true masks?

For each scene seed, on the synthetic object-removal capture (the object stands on the floor):

1. a quick ``nerfacto`` learns the capture (what a user trains before drawing the box);
2. the box is the removable object's bounding box from the scene description, enlarged by ``box_margin`` (a user's box
   drawn around the object in the viewer), given in the capture's coordinates (``--frame capture``);
3. ``ns-diffusion masks`` derives every training view's mask from the nerfacto run's depth (no dilation here, so the
   comparison is with the object's own pixels), with the command's rules (``mask_settings``: the defaults of
   :class:`~ns_diffusion_methods.data.box_masks.BoxMaskSettings` unless given); the baseline is the plain rule (the
   surface point in the box, one ray per pixel, no floor rule: ``floor_margin=0``, ``supersample=1``) on the same run;
4. IoU of each derived mask with the pixels that removing the object changes in that view (the synthetic scene's
   renderer at pixel centres: rays whose first hit is the object, or floor in its shadow; the capture's own masks
   mark the same, from any sub-pixel ray); and, with the shadow rule off (``shadow_darkening=0``), IoU with the
   object's own pixels;
5. ``mald-nerf-small`` (OpenCV inpainter) trains twice, on the capture's true masks and on the derived ones (both
   dilated by the same ``dilate`` kernel), and ``ns-eval`` scores both on the object-free evaluation views
   (``mald_iterations=0`` skips this step).

Rows: ``capture``, ``seed``, ``iou_min``, ``iou_mean`` (the command's rules, object and shadow), ``iou_min_plain``,
``iou_mean_plain`` (the baseline, same truth), ``iou_min_object``, ``iou_mean_object`` (the command's rules without
the shadow, against the object alone), ``masked_psnr_true_masks``, ``masked_psnr_derived_masks``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

DEFAULTS: Dict[str, Any] = {
    "seeds": [2, 3],
    "image_size": 64,
    "num_views": 24,
    "nerfacto_iterations": 2000,
    "mald_iterations": 600,
    "box_margin": 1.2,
    "dilate": [3, 1],
    # BoxMaskSettings fields for the derived masks (e.g. {floor_margin: 0.03, supersample: 2}); {} = the command's
    "mask_settings": {},
    # a small nerfacto on machines without CUDA (about 0.2 s per iteration on 2 cores): only its depth is used
    "nerfacto_cpu_flags": ["--pipeline.model.implementation", "torch",
                           "--pipeline.datamanager.train-num-rays-per-batch", "512",
                           "--pipeline.model.num-proposal-samples-per-ray", "32", "16",
                           "--pipeline.model.num-nerf-samples-per-ray", "16", "--pipeline.model.hidden-dim", "32",
                           "--pipeline.model.hidden-dim-color", "32", "--pipeline.model.max-res", "128",
                           "--pipeline.model.log2-hashmap-size", "14"],
}


def object_box(capture: Path, margin: float):
    """The removable primitive's bounding box (capture coordinates), enlarged by ``margin``, its bottom just above
    the floor (a box drawn around an object standing on the floor stops at the floor)."""
    from ns_diffusion_methods.data.box_masks import Box
    from ns_diffusion_methods.synthetic.scene import Scene

    scene = Scene.from_json(capture / "scene.json")
    prim = scene.primitives[scene.removable_index]
    half = np.asarray(prim.half_extents, dtype=float) * margin
    if prim.kind == "box":  # a yawed box: the axis-aligned box around it
        c, s = abs(math.cos(prim.yaw)), abs(math.sin(prim.yaw))
        half[0], half[1] = c * half[0] + s * half[1], s * half[0] + c * half[1]
    bottom = max(prim.center[2] - half[2], scene.floor.height + 0.01 * half[2])
    top = prim.center[2] + half[2]
    return scene, Box((prim.center[0], prim.center[1], (bottom + top) / 2), (2 * half[0], 2 * half[1], top - bottom))


def true_object_pixels(scene: Any, transforms: Dict[str, Any], frame: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """``[H, W]`` bool each: pixels of ``frame`` whose first hit is the removable object, and those whose first hit
    is in its shadow (pixel-centre rays)."""
    from nerfstudio.cameras.cameras import Cameras

    from ns_diffusion_methods.synthetic.render import render_rays

    c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float32)[None, :3]
    camera = Cameras(camera_to_worlds=c2w, fx=transforms["fl_x"], fy=transforms["fl_y"], cx=transforms["cx"],
                     cy=transforms["cy"], width=transforms["w"], height=transforms["h"])
    rays = camera.generate_rays(camera_indices=0, keep_shape=True)
    shape = rays.origins.shape[:2]
    traced = render_rays(scene, rays.origins.reshape(-1, 3).double(), rays.directions.reshape(-1, 3).double())
    return traced["removable_hit"].reshape(shape).numpy(), traced["removable_shadow"].reshape(shape).numpy()


def _ious(derived: Any, truths: Dict[str, np.ndarray]) -> List[float]:
    """IoU of each training view's derived mask with its true object pixels (views matched by image name)."""
    ious = []
    for path, mask in zip(derived.files, derived.masks):
        truth = truths.get(Path(path).name)
        if truth is not None:
            ious.append(float((mask & truth).sum() / max(1, (mask | truth).sum())))
    return ious


def run(spec: Dict[str, Any], output_dir: Path, console: Any) -> List[Dict[str, Any]]:
    """The benchmark's rows, one per seed (module docstring)."""
    import time

    from nerfstudio.utils.eval_utils import eval_setup

    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, train_run
    from ns_diffusion_methods.data.box_masks import (
        BoxMaskSettings,
        capture_transform,
        derive_masks,
        masks_from_views,
        run_views,
    )
    from ns_diffusion_methods.synthetic import write_object_removal

    params = {**DEFAULTS, **spec.get("params", {})}
    settings = BoxMaskSettings(**{**dict(params["mask_settings"] or {}), "frame": "capture", "dilation": (0, 0)})
    plain = BoxMaskSettings(frame="capture", dilation=(0, 0), floor_margin=0.0, supersample=1)
    no_shadow = BoxMaskSettings(**{**vars(settings), "shadow_darkening": 0.0})
    cpu = [] if torch.cuda.is_available() else ["--machine.device-type", "cpu"]
    quiet = ["--steps-per-eval-batch", "0", "--steps-per-eval-image", "0", "--steps-per-eval-all-images", "0",
             "--steps-per-save", "100000", "--mixed-precision", "False", *cpu]
    dilate = [str(v) for v in params["dilate"]]
    rows: List[Dict[str, Any]] = []
    for seed in params["seeds"]:
        folder = output_dir / f"seed{seed}"
        capture = write_object_removal(folder / "capture", seed=int(seed), image_size=int(params["image_size"]),
                                       num_views=int(params["num_views"]))
        console.rule(f"[bold]seed {seed}[/bold]: nerfacto for the depth")
        nerfacto_flags = [*quiet, "--max-num-iterations", str(params["nerfacto_iterations"])]
        if not torch.cuda.is_available():
            nerfacto_flags += list(params["nerfacto_cpu_flags"])
        nerfacto, _ = train_run("nerfacto", capture, folder / "nerfacto", nerfacto_flags,
                                ["nerfstudio-data", "--eval-mode", "filename"])
        scene, box = object_box(capture, float(params["box_margin"]))
        derived_capture = folder / "capture-derived-masks"
        # what `ns-diffusion masks --frame capture --dilate 0 0` does (masks_from_run), the run loaded once for both
        config, pipeline, _, _ = eval_setup(nerfacto, test_mode="inference")
        views = run_views(config)
        to_capture = capture_transform(config, settings)
        start = time.perf_counter()
        _, derived = masks_from_views(pipeline.model, views, capture, box, settings, output=derived_capture,
                                      to_capture=to_capture)
        mask_seconds = time.perf_counter() - start
        baseline = derive_masks(pipeline.model, views, box, plain, to_capture)
        object_only = derive_masks(pipeline.model, views, box, no_shadow, to_capture)
        transforms = json.loads((capture / "transforms.json").read_text())
        traced = {Path(f["file_path"]).name: true_object_pixels(scene, transforms, f) for f in transforms["frames"]
                  if "object_mask_path" in f and "eval" not in f["file_path"]}
        changed = {name: hit | shadow for name, (hit, shadow) in traced.items()}
        objects = {name: hit for name, (hit, _) in traced.items()}
        ious, plain_ious = _ious(derived, changed), _ious(baseline, changed)
        object_ious = _ious(object_only, objects)
        row: Dict[str, Any] = {"capture": "object-removal", "seed": seed, "views": len(ious),
                               "iou_min": min(ious), "iou_mean": float(np.mean(ious)),
                               "iou_min_plain": min(plain_ious), "iou_mean_plain": float(np.mean(plain_ious)),
                               "iou_min_object": min(object_ious), "iou_mean_object": float(np.mean(object_ious)),
                               "floor_found": derived.floor is not None,
                               "shadow_cells": 0 if derived.shadow is None else int(derived.shadow.shadow.sum()),
                               "mask_seconds": mask_seconds}
        if int(params["mald_iterations"]) > 0:
            for name, data in (("true_masks", capture), ("derived_masks", derived_capture)):
                console.rule(f"[bold]seed {seed}[/bold]: mald-nerf-small on the {name.replace('_', ' ')}")
                config_path, seconds = train_run("mald-nerf-small", data, folder / f"mald-{name}",
                                                 [*quiet, "--max-num-iterations", str(params["mald_iterations"]),
                                                  "pipeline.inpainter:opencv"],
                                                 ["object-mask-data", "--object-mask-dilation", *dilate])
                results = eval_run(config_path, folder / f"mald-{name}" / "eval.json")["results"]
                row[f"masked_psnr_{name}"] = results.get("masked_psnr")
                row[f"psnr_{name}"] = results.get("psnr")
        row["status"] = "ok"
        console.print(row)
        rows.append(row)
    return rows
