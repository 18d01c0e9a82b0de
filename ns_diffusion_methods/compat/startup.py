"""The ``startup`` benchmark: what installing the package costs every nerfstudio command at start.

nerfstudio imports every installed plugin's entry points on every ``ns-*`` command (``ns-train nerfacto`` included).
This measures, in fresh interpreters on the same machine, alternately with and without this package's entry points
(hidden from nerfstudio's plugin discovery for the "without" runs, so both use the same installation):

- ``registry``: ``import nerfstudio.configs.method_configs`` (what every ``ns-*`` command does first);
- ``ns-train --help``: nerfstudio's ``ns-train`` entry point printing its help (all methods' configs built);

and reports the median and spread of each, the difference, and which heavy libraries each variant loaded. Target:
the plugin adds at most 0.3 s to ``ns-train --help``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

#: libraries whose import at discovery would mean the plugin is not import-light
HEAVY = ("diffusers", "transformers", "peft", "lpips", "cv2")

#: Python source defining ``hide_plugin_entry_points()``: hides this package's entry points from both of nerfstudio's
#: plugin registries, so one installation also gives the "without the plugin" case
HIDE_PLUGIN_ENTRY_POINTS = textwrap.dedent("""
    def hide_plugin_entry_points():
        import importlib.metadata as metadata
        import nerfstudio.plugins.registry as registry, nerfstudio.plugins.registry_dataparser as registry_dataparser
        def entry_points(**kwargs):
            found = metadata.entry_points(**kwargs)
            if "group" not in kwargs:
                return found
            return type(found)(e for e in found if not e.value.startswith("ns_diffusion_methods"))
        registry.entry_points = registry_dataparser.entry_points = entry_points
""")

_PROBE = HIDE_PLUGIN_ENTRY_POINTS + textwrap.dedent("""
    import io, json, sys, time, contextlib
    start = time.perf_counter()
    variant, task = sys.argv[1], sys.argv[2]
    if variant == "without":
        hide_plugin_entry_points()
    if task == "registry":
        import nerfstudio.configs.method_configs
    else:
        from nerfstudio.scripts.train import entrypoint
        sys.argv = ["ns-train", "--help"]
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                entrypoint()
            except SystemExit:
                pass
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,))


def measure(variant: str, task: str) -> Dict[str, Any]:
    """One fresh interpreter: ``variant`` is ``with`` or ``without`` (the plugin), ``task`` ``registry`` or ``help``."""
    result = subprocess.run([sys.executable, "-c", _PROBE, variant, task], capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"The start-up probe ({variant}, {task}) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(spec: Dict[str, Any], output_dir: Path, console: Any) -> List[Dict[str, Any]]:
    """The benchmark's rows: per task and variant, the median/min/max seconds over ``repeats`` alternating runs."""
    params = spec.get("params", {})
    repeats = int(params.get("repeats", 7))
    rows: List[Dict[str, Any]] = []
    for task in params.get("tasks", ["registry", "help"]):
        times: Dict[str, List[float]] = {"without": [], "with": []}
        heavy: Dict[str, List[str]] = {}
        measure("with", task)  # warm the file cache: the first run of all reads every module from disk
        for repeat in range(repeats):
            for variant in ("without", "with") if repeat % 2 == 0 else ("with", "without"):
                probe = measure(variant, task)
                times[variant].append(probe["seconds"])
                heavy[variant] = probe["heavy"]
                console.print(f"{task:8s} {variant:7s} run {repeat + 1}/{repeats}: {probe['seconds']:.2f} s")
        medians = {variant: statistics.median(values) for variant, values in times.items()}
        for variant in ("without", "with"):
            rows.append({"task": "ns-train --help" if task == "help" else "method registry import",
                         "plugin": variant, "median_s": round(medians[variant], 3),
                         "min_s": round(min(times[variant]), 3), "max_s": round(max(times[variant]), 3),
                         "added_s": round(medians[variant] - medians["without"], 3),
                         "heavy_modules": ", ".join(heavy[variant]) or "none", "repeats": repeats})
    return rows
