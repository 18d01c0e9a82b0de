"""``multi-object-loading``: how long a multi-object dataset of SRN cars' size takes to load, and how much memory.

The dataset is written in the SRN layout with the package's own generator (``ns-diffusion-synth objects``): a few
distinct objects (``distinct_train``/``distinct_test``) are generated and copied to the sizes of SRN cars (2 458
training objects x 50 views, 704 held-out objects x 251 views, 128 px; ``fraction`` < 1 writes that share of the
objects and extrapolates linearly, flagged ``extrapolated``). Each row then loads it in a fresh Python process, the
way ``ns-train ssdnerf`` does (``srn-data`` + the multi-object datamanager with its held-out split, ``test_mode="val"``,
up to the first training batch), and records the wall time and the process's peak resident memory:

- ``package`` with ``workers`` = 1 (everything in the loading process, the default) and 2 (a pool of 2 decoding
  processes): the package's loader (files listed, checks on a few objects, training pixels decoded into one ``uint8``
  tensor, held-out objects decoded only when evaluation asks for them);
- ``per-object + concat`` (the control: how the data was read before, each object into its own array, both splits
  decoded up front, then concatenated) on ``previous_fraction`` of the objects, extrapolated to the full size, since at
  full size it needs more memory than the machine may have.

The files were just written, so they are read from the page cache: the times are decoding, not disk, times (a cold
read from a network disk adds its transfer time).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

DEFAULTS: Dict[str, Any] = {
    "train_objects": 2458,
    "train_views": 50,
    "test_objects": 704,
    "test_views": 251,
    "image_size": 128,
    "distinct_train": 64,
    "distinct_test": 8,
    "fraction": 1.0,
    "previous_fraction": 0.1,
    "workers": [1, 2],
    "seed": 0,
    "delete_data": True,
}

#: run in a fresh interpreter: load like ns-train does, print one JSON line
_MEASURE = r"""
import json, sys, time
from pathlib import Path
data, loader, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
import torch
from ns_diffusion_methods.data.multi_object import MultiObjectDataManagerConfig
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig
def status_gb(key):  # VmRSS: resident now; VmHWM: its peak (ru_maxrss may report the parent's, inherited at exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")
before = status_gb("VmRSS")
start = time.perf_counter()
if loader == "package":
    config = MultiObjectDataManagerConfig(dataparser=SRNDataParserConfig(data=data, load_workers=workers))
    dm = config.setup(device="cpu", test_mode="val")
    dm.next_train(0)
    images = dm.train_images.numel()
else:
    import numpy as np
    from ns_diffusion_methods.data.srn import read_srn_objects
    images = 0
    for split in ("train", "test"):
        objects = read_srn_objects(data / split)
        stacked = torch.cat([torch.as_tensor(obj.images) for obj in objects])
        images += stacked.numel() if split == "train" else 0
        del objects
        if split == "train":
            keep = stacked
elapsed = time.perf_counter() - start
peak = status_gb("VmHWM")
print(json.dumps({"load_s": elapsed, "peak_ram_gb": peak, "baseline_ram_gb": before, "images_gb": images / 1e9}))
"""


def write_dataset(folder: Path, params: Dict[str, Any], fraction: float, console: Any) -> Dict[str, int]:
    """The SRN-layout dataset at ``fraction`` of the sizes in ``params`` (distinct objects generated, then copied)."""
    from ns_diffusion_methods.synthetic import write_objects

    counts = {"train": max(1, math.ceil(params["train_objects"] * fraction)),
              "test": max(1, math.ceil(params["test_objects"] * fraction))}
    marker = folder / "written.json"
    wanted = {"counts": counts, **{k: params[k] for k in ("train_views", "test_views", "image_size", "distinct_train",
                                                          "distinct_test", "seed")}}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return counts
    shutil.rmtree(folder, ignore_errors=True)
    distinct = folder.parent / f"{folder.name}-distinct"
    console.print(f"Generating {params['distinct_train']} + {params['distinct_test']} distinct objects ...")
    write_objects(distinct, seed=int(params["seed"]), image_size=int(params["image_size"]),
                  num_train=int(params["distinct_train"]), num_test=int(params["distinct_test"]),
                  views=(int(params["train_views"]), int(params["test_views"])))
    start = time.perf_counter()
    for split, count in counts.items():
        sources = sorted(p for p in (distinct / split).iterdir() if p.is_dir())
        for index in range(count):
            shutil.copytree(sources[index % len(sources)], folder / split / f"obj_{index:05d}")
    shutil.copy(distinct / "meta.json", folder / "meta.json")
    shutil.rmtree(distinct)
    console.print(f"Copied to {counts['train']} + {counts['test']} objects in {time.perf_counter() - start:.0f} s.")
    marker.write_text(json.dumps(wanted))
    return counts


def measure(data: Path, loader: str, workers: int) -> Dict[str, float]:
    """Load ``data`` in a fresh interpreter; its wall time and peak memory."""
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(data), loader, str(workers)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Loading {data} ({loader}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(spec: Dict[str, Any], output_dir: Path, console: Any) -> List[Dict[str, Any]]:
    """The benchmark's rows (module docstring)."""
    import os

    params = {**DEFAULTS, **spec.get("params", {})}
    rows: List[Dict[str, Any]] = []
    plans = [("package", int(w), float(params["fraction"])) for w in params["workers"]]
    if float(params["previous_fraction"]) > 0:
        plans.append(("per-object + concat", 1, float(params["previous_fraction"])))
    for loader, workers, fraction in plans:
        folder = output_dir / f"srn-{fraction:g}"
        counts = write_dataset(folder, params, fraction, console)
        processes = workers if workers > 0 else min(os.cpu_count() or 1, 16)
        console.rule(f"[bold]{loader}[/bold], {processes} process(es), {counts['train']} training objects")
        measured = measure(folder, "package" if loader == "package" else "concat", workers)
        scale = params["train_objects"] / counts["train"]
        extrapolated = not math.isclose(scale, 1.0)
        base = measured["baseline_ram_gb"]
        row = {
            "loader": loader, "workers": processes, "objects": int(params["train_objects"]),
            "views": int(params["train_views"]), "image_size": int(params["image_size"]),
            "held_out_objects": int(params["test_objects"]), "objects_loaded": counts["train"],
            "load_s": measured["load_s"] * scale,
            # the pixels scale with the objects, the interpreter's own memory does not
            "peak_ram_gb": base + (measured["peak_ram_gb"] - base) * scale,
            "train_images_gb": measured["images_gb"] * scale, "baseline_ram_gb": measured["baseline_ram_gb"],
            "extrapolated": extrapolated, "measured_load_s": measured["load_s"],
            "measured_peak_ram_gb": measured["peak_ram_gb"],
        }
        console.print(row)
        rows.append(row)
    if params["delete_data"]:
        for folder in output_dir.glob("srn-*"):
            shutil.rmtree(folder, ignore_errors=True)
    return rows
