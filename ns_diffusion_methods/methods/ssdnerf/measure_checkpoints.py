"""Measure SSDNeRF checkpoints at scale: file size, time and peak memory of saving and loading the per-object
buffers, in the former format (``torch.save`` of the float32 buffers) and the current one
(:mod:`ns_diffusion_methods.methods.ssdnerf.checkpoints`); and the effect of bfloat16 moments on the Adam updates
after a resume.

Each size measurement runs in its own process (peak memory is the process's resident-set high-water mark, reset
before the operation; Linux only)::

    python -m ns_diffusion_methods.methods.ssdnerf.measure_checkpoints save --format new --num-objects 2458 \\
        --folder /tmp/ckpts        # writes /tmp/ckpts/new/step-000000001.ckpt, prints one JSON line
    python -m ns_diffusion_methods.methods.ssdnerf.measure_checkpoints load --format new --num-objects 2458 \\
        --folder /tmp/ckpts        # loads it into freshly allocated buffers
    python -m ns_diffusion_methods.methods.ssdnerf.measure_checkpoints moments   # the bfloat16 effect

Only the per-object buffers are in these checkpoints (no decoder or U-Net), at the paper's code size 3 x 6 x 128 x
128 unless ``--channels``/``--resolution`` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict

import torch


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident set


def _buffers(num_objects: int, channels: int, resolution: int) -> SimpleNamespace:
    """Per-object buffers with values in every page (resident, as a trained model's are)."""
    shape = (num_objects, 3, channels, resolution, resolution)
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(codes_pre=torch.randn(shape, generator=g) * 0.5,
                           code_exp_avg=torch.randn(shape, generator=g) * 1e-3,
                           code_exp_avg_sq=torch.rand(shape, generator=g) * 1e-6,
                           code_steps=torch.ones(num_objects, dtype=torch.long))


def _path(folder: Path, fmt: str) -> Path:
    return folder / fmt / "step-000000001.ckpt"


def measure_save(fmt: str, num_objects: int, channels: int, resolution: int, folder: Path,
                 chunk_objects: int) -> Dict[str, float]:
    from ns_diffusion_methods.engine.trainer import atomic_torch_save
    from ns_diffusion_methods.methods.ssdnerf.checkpoints import streamed_code_state

    model = _buffers(num_objects, channels, resolution)
    state = {"_model." + name: getattr(model, name)
             for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps")}
    if fmt == "new":
        state.update(streamed_code_state(model, "_model.", "bfloat16", chunk_objects))
    path = _path(folder, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    _reset_peak()
    before, start = _status("VmRSS"), time.perf_counter()
    atomic_torch_save({"step": 1, "pipeline": state}, path)
    seconds = time.perf_counter() - start
    return {"op": "save", "format": fmt, "num_objects": num_objects, "file_bytes": path.stat().st_size,
            "buffers_bytes": 3 * model.codes_pre.nbytes, "extra_peak_bytes": _status("VmHWM") - before,
            "seconds": round(seconds, 2)}


def measure_load(fmt: str, num_objects: int, channels: int, resolution: int, folder: Path) -> Dict[str, float]:
    from ns_diffusion_methods.methods.ssdnerf.checkpoints import load_code_state

    model = _buffers(num_objects, channels, resolution)  # the model's own buffers, before it loads
    _reset_peak()
    before, start = _status("VmRSS"), time.perf_counter()
    state = torch.load(_path(folder, fmt), map_location="cpu")["pipeline"]  # what nerfstudio's loaders do
    if fmt == "new":
        load_code_state(model, state, "_model.")
    else:  # nn.Module's loading: one copy_ per buffer
        for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps"):
            getattr(model, name).copy_(state["_model." + name])
    del state
    seconds = time.perf_counter() - start
    return {"op": "load", "format": fmt, "num_objects": num_objects, "extra_peak_bytes": _status("VmHWM") - before,
            "seconds": round(seconds, 2)}


def measure_moments(num_objects: int = 32, steps_before: int = 50, steps_after: int = 200,
                    seed: int = 0) -> Dict[str, float]:
    """Per-object Adam (the model's update, lr 1e-2) on codes ``[3, 6, 32, 32]`` with gradients = a fixed direction
    per object + twice as much noise, ``steps_before`` steps, a checkpoint round trip of the moments (float32 or
    bfloat16), then ``steps_after`` more steps with the same gradients. Returns the deviation of the bfloat16 run's
    codes from the float32 run's, relative to how far the codes moved since the checkpoint, after 1, 10, 100 and
    ``steps_after`` steps."""
    from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel

    shape = (num_objects, 3, 6, 32, 32)
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(shape, generator=g)

    def grads(count: int):
        return [direction + 2 * torch.randn(shape, generator=g) for _ in range(count)]

    def adam_model():
        model = SimpleNamespace(codes_pre=torch.zeros(shape), code_exp_avg=torch.zeros(shape),
                                code_exp_avg_sq=torch.zeros(shape),
                                code_steps=torch.zeros(num_objects, dtype=torch.long))
        model.step = lambda grad: SSDNeRFModel.code_adam_step(model, torch.arange(num_objects), grad, 1e-2)
        return model

    exact = adam_model()
    for grad in grads(steps_before):
        exact.step(grad)
    rounded = adam_model()
    for name in ("codes_pre", "code_exp_avg", "code_exp_avg_sq", "code_steps"):
        value = getattr(exact, name)
        saved = value.bfloat16() if name in ("code_exp_avg", "code_exp_avg_sq") else value
        getattr(rounded, name).copy_(saved)
    at_checkpoint = exact.codes_pre.clone()
    results = {}
    for step, grad in enumerate(grads(steps_after), start=1):
        exact.step(grad)
        rounded.step(grad)
        if step in (1, 10, 100, steps_after):
            moved = (exact.codes_pre - at_checkpoint).norm()
            results[f"after_{step}"] = float((rounded.codes_pre - exact.codes_pre).norm() / moved)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("op", choices=["save", "load", "moments"])
    parser.add_argument("--format", choices=["old", "new"], default="new")
    parser.add_argument("--num-objects", type=int, default=2458)
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--chunk-objects", type=int, default=64)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/ssdnerf-checkpoints"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.op == "save":
        result = measure_save(args.format, args.num_objects, args.channels, args.resolution, args.folder,
                              args.chunk_objects)
    elif args.op == "load":
        result = measure_load(args.format, args.num_objects, args.channels, args.resolution, args.folder)
    else:
        result = measure_moments()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
