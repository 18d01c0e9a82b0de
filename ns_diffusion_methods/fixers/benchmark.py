"""Speed and memory of the Difix fixer: ``ns-diffusion benchmark difix-speed``.

Times :meth:`DifixFixer.fix` on one frame (with 0 or more reference views) for the full-size architecture --
SD-Turbo's UNet (866 M parameters) and the SD VAE with skip convolutions and LoRA, built from their published configs
with random weights, since speed does not depend on the weights -- at the configured resolutions and dtypes, on
whatever device is present. Rows: ms per frame (mean over ``repeats`` after ``warmup`` calls) and peak memory
(CUDA: peak allocated by torch; CPU: peak resident memory of the process during the timed calls, weights included).

``params`` (see the definition ``difix-speed.yaml`` in ``ns_diffusion_methods/benchmark/definitions``): ``resolutions``
[[H, W], ...], ``dtypes`` (float32, bfloat16, float16), ``references`` (reference views per frame), ``warmup``,
``repeats``, ``architecture`` (full | tiny), ``device`` (auto | cpu | cuda) and ``cpu_params``, entries that replace
the others when no GPU is used (a CPU-feasible subset).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any, Dict, List

import torch

from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig
from ns_diffusion_methods.fixers.difix.fixer import DifixFixer
from ns_diffusion_methods.fixers.difix.model import DifixModel


class _PeakRss:
    """Samples the process's resident memory in a background thread; ``peak_mb`` is the maximum seen."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self._page
        except OSError:  # not Linux: the process maximum so far (kB on Linux, bytes on macOS)
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> "_PeakRss":
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def device_name(device: torch.device) -> str:
    """A readable device description (GPU name, or CPU with its thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(spec: Dict[str, Any], output_dir: Any, console: Any) -> List[Dict[str, Any]]:
    """Time the fixer for every (dtype, resolution, reference count) of ``spec["params"]``; returns table rows."""
    params = dict(spec.get("params", {}))
    requested = params.get("device", "auto")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested)
    if device.type == "cpu" and params.get("cpu_params"):
        params.update(params["cpu_params"])
        console.print(f"[yellow]No GPU: running the CPU subset {params['cpu_params']}.[/yellow]")
    architecture = params.get("architecture", "full")
    warmup, repeats = int(params.get("warmup", 2)), int(params.get("repeats", 5))
    rows: List[Dict[str, Any]] = []
    for dtype_name in params.get("dtypes", ["float32"]):
        console.print(f"Building the {architecture} Difix architecture ({dtype_name}) on {device} ...")
        model = DifixModel.full_size_random(device=device) if architecture == "full" else DifixModel.tiny()
        config = DifixFixerConfig(model=architecture, dtype=dtype_name, chunk_size=1)
        dtype_name = config.dtype  # the current spelling of a legacy one (fp32 -> float32)
        fixer = DifixFixer(config, device=device, model=model)
        for height, width in params.get("resolutions", [[576, 1024]]):
            for num_refs in params.get("references", [0, 1]):
                row: Dict[str, Any] = {"setting": f"{height}x{width} {dtype_name} {num_refs} ref",
                                       "resolution": f"{height}x{width}", "dtype": dtype_name,
                                       "references": num_refs, "architecture": architecture,
                                       "device": device_name(device), "repeats": repeats}
                generator = torch.Generator().manual_seed(0)
                image = torch.rand(1, 3, height, width, generator=generator).to(device)
                refs = [torch.rand(num_refs, 3, height, width, generator=generator).to(device)] if num_refs else None
                try:
                    for _ in range(warmup):
                        fixer.fix(image, refs)
                    _synchronize(device)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    times = []
                    with _PeakRss() as rss:
                        for _ in range(repeats):
                            start = time.perf_counter()
                            fixer.fix(image, refs)
                            _synchronize(device)
                            times.append(time.perf_counter() - start)
                    row["ms_per_frame"] = 1000.0 * sum(times) / len(times)
                    row["ms_min"] = 1000.0 * min(times)
                    row["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) / 2**20
                                             if device.type == "cuda" else rss.peak_mb)
                    row["status"] = "ok"
                except torch.cuda.OutOfMemoryError:
                    row["status"] = "out of memory"
                console.print(row)
                rows.append(row)
                del image, refs
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        del fixer, model
        gc.collect()
    return rows
