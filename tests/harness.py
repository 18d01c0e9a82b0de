"""Train, evaluate and render any registered nerfstudio method in-process, through nerfstudio's own entry points.

``train`` parses its arguments exactly as ``ns-train`` does (tyro over nerfstudio's method union, plugins included)
and runs ``nerfstudio.scripts.train.main``; ``evaluate`` and ``render_dataset`` run the ``ns-eval`` and
``ns-render dataset`` commands' classes. Defaults keep runs CPU-friendly and free of viewers and network access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

#: flags every test run gets: CPU, no viewer, no wandb, a fixed run folder name
BASE_FLAGS: List[str] = [
    "--machine.device-type", "cpu",
    "--mixed-precision", "False",
    "--vis", "tensorboard",
    "--viewer.quit-on-train-completion", "True",
    "--timestamp", "run",
]

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


def train(
    method: str,
    data: Path,
    output_dir: Path,
    flags: Sequence[str] = (),
    dataparser: Sequence[str] = (),
    max_num_iterations: Optional[int] = None,
) -> Path:
    """Run ``ns-train METHOD [BASE_FLAGS] [flags] --data DATA [dataparser...]``; returns the run's ``config.yml``.

    Args:
        method: a registered method name (stock or plugin).
        data: the capture folder (``--data``).
        output_dir: ``--output-dir``.
        flags: extra ``ns-train`` flags, after :data:`BASE_FLAGS` (later flags win).
        dataparser: the dataparser subcommand and its flags, e.g. ``["nerfstudio-data", "--eval-mode", "filename"]``.
        max_num_iterations: shortcut for ``--max-num-iterations``.
    """
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import main

    args = [method, *BASE_FLAGS, "--output-dir", str(output_dir), "--data", str(data), *flags]
    if max_num_iterations is not None:
        args += ["--max-num-iterations", str(max_num_iterations)]
    args += list(dataparser)
    config = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    main(config)
    return config.get_base_dir() / "config.yml"


def evaluate(config_path: Path, output_path: Optional[Path] = None, render_output_path: Optional[Path] = None) -> Dict:
    """Run ``ns-eval --load-config CONFIG``; returns the JSON it wrote."""
    from nerfstudio.scripts.eval import ComputePSNR

    output_path = output_path or config_path.parent / "eval.json"
    ComputePSNR(load_config=config_path, output_path=output_path, render_output_path=render_output_path).main()
    return json.loads(output_path.read_text())


def render_dataset(config_path: Path, output_path: Path, split: str = "test",
                   outputs: Sequence[str] = ("rgb",)) -> List[Path]:
    """Run ``ns-render dataset --load-config CONFIG``; returns the image files it wrote."""
    from nerfstudio.scripts.render import DatasetRender

    DatasetRender(load_config=config_path, output_path=output_path, split=split,
                  rendered_output_names=list(outputs)).main()
    return sorted(p for p in output_path.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg"))


def latest_checkpoint(config_path: Path) -> Path:
    """The newest ``step-*.ckpt`` of a run."""
    checkpoints = sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, f"no checkpoint in {config_path.parent / 'nerfstudio_models'}"
    return checkpoints[-1]
