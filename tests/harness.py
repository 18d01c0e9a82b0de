"""Test-side helpers around :mod:`ns_diffusion_methods.benchmark.nerfstudio_runs` (nerfstudio's real entry points).

``train`` runs ``ns-train`` in-process with CPU-friendly defaults; ``evaluate`` runs ``ns-eval``; ``render_dataset``
runs ``ns-render dataset``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ns_diffusion_methods.benchmark.nerfstudio_runs import eval_run, latest_checkpoint, render_run, train_run

__all__ = ["BASE_FLAGS", "SMALL_NERFACTO_FLAGS", "evaluate", "latest_checkpoint", "render_dataset", "train"]

#: flags every test run gets: CPU, no mixed precision (train_run adds no viewer, no wandb, run folder "run")
BASE_FLAGS: List[str] = ["--machine.device-type", "cpu", "--mixed-precision", "False"]

#: a small stock nerfacto (torch implementation): about 0.1-0.2 s per iteration on 2 cores
SMALL_NERFACTO_FLAGS: List[str] = [
    "--pipeline.model.implementation", "torch",
    "--pipeline.datamanager.train-num-rays-per-batch", "256",
    "--pipeline.datamanager.eval-num-rays-per-batch", "256",
    "--pipeline.model.eval-num-rays-per-chunk", "4096",
    "--pipeline.model.num-proposal-samples-per-ray", "32", "16",
    "--pipeline.model.num-nerf-samples-per-ray", "16",
    "--pipeline.model.hidden-dim", "32",
    "--pipeline.model.hidden-dim-color", "32",
    "--pipeline.model.max-res", "128",
    "--pipeline.model.log2-hashmap-size", "14",
]


def train(method: str, data: Path, output_dir: Path, flags: Sequence[str] = (), dataparser: Sequence[str] = (),
          max_num_iterations: Optional[int] = None) -> Path:
    """``ns-train METHOD [BASE_FLAGS] [--max-num-iterations N] [flags] --data DATA [dataparser...]``; returns the
    run's ``config.yml``. ``flags`` may end with a component subcommand and its flags (``pipeline.inpainter:ldm
    --pipeline.inpainter.model tiny``): tyro applies flags to the subcommand they follow."""
    extra = [] if max_num_iterations is None else ["--max-num-iterations", str(max_num_iterations)]
    config_path, _ = train_run(method, data, output_dir, [*BASE_FLAGS, *extra, *flags], dataparser)
    return config_path


def evaluate(config_path: Path, output_path: Optional[Path] = None, render_output_path: Optional[Path] = None) -> Dict:
    """``ns-eval --load-config CONFIG``; returns the JSON it wrote."""
    return eval_run(config_path, output_path, render_output_path)


def render_dataset(config_path: Path, output_path: Path, split: str = "test",
                   outputs: Sequence[str] = ("rgb",)) -> List[Path]:
    """``ns-render dataset --load-config CONFIG``; returns the image files it wrote."""
    return render_run(config_path, output_path, split, outputs)
