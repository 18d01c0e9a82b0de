"""The benchmark runner behind ``ns-diffusion benchmark NAME [--output DIR]`` (the command:
:class:`ns_diffusion_methods.benchmark.commands.BenchmarkCommand`).

A benchmark is a YAML file ``NAME.yaml`` in the package's ``definitions/`` folder, or in ``./benchmarks`` for
your own (see ``definitions/README.md`` for the format).
Two kinds exist:

``train-eval``
    Generate a synthetic capture (``kind``), or take data you downloaded (``path: ${data}``, given with
    ``--set data=PATH``), then train and evaluate each entry (a registered method with its flags) through nerfstudio's
    own ``ns-train``/``ns-eval`` code paths. Rows hold the evaluation metrics and wall times, and an entry's ``paper``
    numbers as ``paper_<metric>`` beside them.
``python``
    Call ``entry`` (``module:function``) as ``function(spec, output_dir, console) -> list[dict]``: for benchmarks that
    are not "train a method and evaluate it" (fixer speed, a method's own protocol).

Either way the runner writes ``results.json`` (rows, the definition, the device and versions), ``results.md`` (a
Markdown table with the device, versions and wall time) and, when the definition asks for one, ``results.png``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import yaml
from rich.console import Console

from ns_diffusion_methods.errors import UserFacingError

KINDS = ("train-eval", "python")
REQUIRED_KEYS: Dict[str, Tuple[str, ...]] = {
    "train-eval": ("name", "description", "kind", "entries"),
    "python": ("name", "description", "kind", "entry"),
}


#: the package's own benchmark definitions (shipped in the wheel as package data)
PACKAGE_DEFINITIONS = Path(__file__).resolve().parent / "definitions"


def definition_dirs() -> List[Path]:
    """Where definitions are looked for: ``./benchmarks`` (a user's own definitions, if the folder exists), then the
    package's own (:data:`PACKAGE_DEFINITIONS`, installed with the package)."""
    return [Path.cwd() / "benchmarks", PACKAGE_DEFINITIONS]


def available_benchmarks() -> List[str]:
    """Names of the definitions found in :func:`definition_dirs`."""
    names = {p.stem for d in definition_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_definition(name: str) -> Path:
    """The YAML file of benchmark ``name`` (or ``name`` itself when it is a path to a YAML file)."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    for d in definition_dirs():
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_benchmarks()) or "none found"
    raise UserFacingError(f"No benchmark named `{name}` in {' or '.join(str(d) for d in definition_dirs())}. "
                          f"Known benchmarks: {known}. Pass one of these, or the path to a YAML file.")


def load_definition(path: Path, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Read and check a definition; ``overrides`` replace entries of its ``params`` (for quick runs)."""
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserFacingError(f"The benchmark definition {path} is not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise UserFacingError(f"The benchmark definition {path} must be a YAML mapping, but is {type(spec).__name__}.")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise UserFacingError(f"`kind` in {path} must be one of {', '.join(KINDS)}, but is {kind!r}.")
    missing = [k for k in REQUIRED_KEYS[kind] if k not in spec]
    if missing:
        raise UserFacingError(f"The benchmark definition {path} lacks {', '.join(missing)} (needed for kind {kind}).")
    if kind == "train-eval":
        if "capture" not in spec and "captures" not in spec:
            raise UserFacingError(f"The benchmark definition {path} needs `capture` (or a list `captures`).")
        for capture in spec.get("captures") or [spec["capture"]]:
            if not isinstance(capture, dict) or ("kind" not in capture and "path" not in capture):
                raise UserFacingError(f"Each capture of {path} needs `kind` (a synthetic capture) or `path` (data "
                                      f"you downloaded, e.g. `path: ${{data}}`).")
        for i, entry in enumerate(spec["entries"]):
            if not isinstance(entry, dict) or "name" not in entry or "method" not in entry:
                raise UserFacingError(f"Entry {i} of {path} needs at least `name` and `method`.")
    spec.setdefault("params", {})
    if overrides:
        spec["params"].update(overrides)
    return spec


def environment_info() -> Dict[str, Any]:
    """The device, library versions and machine a benchmark ran on."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        cpu = platform.processor() or "CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    return {
        "device": device,
        "cuda": torch.cuda.is_available(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": {pkg: ver(pkg) for pkg in ("ns-diffusion-methods", "nerfstudio", "torch", "diffusers", "gsplat")},
    }


def _substitute(value: Any, params: Dict[str, Any]) -> Any:
    """``"${name}"`` -> ``params["name"]`` (other values unchanged)."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        return params.get(value[2:-1])
    return value


def user_capture(capture: Dict[str, Any], spec: Dict[str, Any]) -> Path:
    """The downloaded capture a reproduction benchmark runs on: ``capture.path`` (usually ``${data}``, set with
    ``--set data=PATH``), checked to exist before anything trains."""
    path = _substitute(capture["path"], spec["params"])
    how = str(spec.get("data_help", "")).strip()
    if path in (None, ""):
        raise UserFacingError(f"The benchmark `{spec['name']}` runs on data you download first; pass its folder with "
                              f"`--set data=PATH`. {how}".strip())
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise UserFacingError(f"The data folder {folder} of benchmark `{spec['name']}` does not exist or is not a "
                              f"folder. Pass the downloaded data with `--set data=PATH`. {how}".strip())
    return folder


def make_capture(capture: Dict[str, Any], folder: Path) -> Path:
    """Write the synthetic capture a ``train-eval`` benchmark names (``kind`` plus the writer's arguments)."""
    from ns_diffusion_methods import synthetic

    writers: Dict[str, Callable[..., Path]] = {
        "object-removal": synthetic.write_object_removal,
        "sparse-views": synthetic.write_sparse_views,
        "objects": synthetic.write_objects,
    }
    options = dict(capture)
    kind = options.pop("kind", None)
    if kind not in writers:
        raise UserFacingError(f"`capture.kind` must be one of {', '.join(writers)}, but is {kind!r}.")
    return writers[kind](folder / kind, **options)


def run_train_eval(spec: Dict[str, Any], output_dir: Path, console: Console) -> List[Dict[str, Any]]:
    """Train and evaluate every entry of a ``train-eval`` benchmark on each of its captures."""
    from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, train_run

    captures = spec.get("captures") or [spec["capture"]]
    metrics = spec.get("metrics", ["psnr", "ssim", "lpips"])
    cuda = torch.cuda.is_available()
    rows: List[Dict[str, Any]] = []
    # every downloaded capture is checked before the first run starts
    user_data = {i: user_capture(c, spec) for i, c in enumerate(captures) if "path" in c}
    for index, capture in enumerate(captures):
        if index in user_data:
            data, label = user_data[index], user_data[index].name
        else:
            data, label = make_capture(capture, output_dir / "capture"), capture["kind"]
        for entry in spec["entries"]:
            row: Dict[str, Any] = {"capture": label, "name": entry["name"], "method": entry["method"]}
            if entry.get("requires_cuda") and not cuda:
                console.print(f"[yellow]Skipping {entry['name']}: it needs CUDA.[/yellow]")
                rows.append({**row, **{f"paper_{m}": v for m, v in entry.get("paper", {}).items()},
                             "status": "skipped (needs CUDA)"})
                continue
            console.rule(f"[bold]{entry['name']}[/bold] ({entry['method']}) on {label}")
            flags = [*spec.get("flags", []), *entry.get("flags", [])]
            if not cuda:  # CPU-only settings, e.g. nerfacto's torch implementation
                flags = ["--machine.device-type", "cpu", *flags, *spec.get("cpu_flags", []),
                         *entry.get("cpu_flags", [])]
            dataparser = entry.get("dataparser", spec.get("dataparser", []))
            run_dir = output_dir / "runs" / label / entry["name"]
            config_path, train_s = train_run(entry["method"], data, run_dir, flags, dataparser)
            results = eval_run(config_path, run_dir / "eval.json")["results"]
            row.update({m: results[m] for m in metrics if m in results})
            row.update({f"paper_{m}": value for m, value in entry.get("paper", {}).items()})
            row.update({"train_s": round(train_s, 1), "status": "ok"})
            iterations = _flag_value(flags, "--max-num-iterations")
            if iterations:
                row["s_per_iter"] = round(train_s / int(iterations), 4)
            rows.append(row)
    return rows


def _flag_value(flags: List[str], name: str) -> Optional[str]:
    value = None
    for i, flag in enumerate(flags[:-1]):
        if flag == name:
            value = flags[i + 1]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(rows: List[Dict[str, Any]], columns: Optional[List[str]] = None) -> str:
    """Rows as a Markdown table; columns default to every key, in order of first appearance."""
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(spec: Dict[str, Any], rows: List[Dict[str, Any]], env: Dict[str, Any], wall_s: float,
                 output_dir: Path) -> Dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (when ``plot`` is defined and matplotlib works) ``results.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "results.json", "markdown": output_dir / "results.md"}
    paths["json"].write_text(json.dumps({"benchmark": spec["name"], "description": spec["description"],
                                         "environment": env, "wall_s": round(wall_s, 1), "definition": spec,
                                         "rows": rows}, indent=2, default=str))
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    text = [f"## Benchmark `{spec['name']}`", "", spec["description"].strip(), "",
            markdown_table(rows, spec.get("columns")), "",
            f"Device: {env['device']}. Versions: {versions}. Python {env['python']}. "
            f"Total wall time {wall_s / 60:.1f} min, {env['date']}."]
    paths["markdown"].write_text("\n".join(text) + "\n")
    plot = spec.get("plot")
    if plot:
        paths["plot"] = _plot(rows, plot, spec["name"], output_dir / "results.png")
    return paths


def _plot(rows: List[Dict[str, Any]], plot: Dict[str, Any], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_keys = plot.get("x", "name"), plot.get("y", ["psnr"])
    y_keys = [y_keys] if isinstance(y_keys, str) else list(y_keys)
    usable = [r for r in rows if all(isinstance(r.get(y), (int, float)) for y in y_keys)]
    fig, axes = plt.subplots(1, len(y_keys), figsize=(4 * len(y_keys), 3.2), squeeze=False)
    for ax, y in zip(axes[0], y_keys):
        ax.bar([str(r.get(x_key)) for r in usable], [r[y] for r in usable], color="#4c72b0")
        ax.set_title(y)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_benchmark(name: str, output: Optional[Path] = None, overrides: Optional[Dict[str, Any]] = None,
                  console: Optional[Console] = None) -> Dict[str, Path]:
    """Run benchmark ``name`` and write its report into ``output`` (default
    ``outputs/ns-diffusion/benchmark/NAME/<timestamp>``)."""
    from ns_diffusion_methods.cli.outputs import default_output

    console = console or Console()
    path = find_definition(name)
    spec = load_definition(path, overrides)
    output_dir = Path(output) if output is not None else default_output("benchmark", spec["name"])
    output_dir.mkdir(parents=True, exist_ok=True)
    env = environment_info()
    console.print(f"[bold]Benchmark {spec['name']}[/bold] ({path}) on {env['device']}")
    start = time.perf_counter()
    if spec["kind"] == "train-eval":
        rows = run_train_eval(spec, output_dir, console)
    else:
        module_name, _, function_name = spec["entry"].partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        rows = function(spec, output_dir, console)
    paths = write_report(spec, rows, env, time.perf_counter() - start, output_dir)
    console.print(Path(paths["markdown"]).read_text())
    console.print(f"Results written to {output_dir}")
    return paths


def parse_override(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` (VALUE in YAML) as ``(key, value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserFacingError(f"`--set` takes KEY=VALUE (VALUE in YAML), but got {text!r}.")
    return key, yaml.safe_load(value)
