"""Train, evaluate and render any registered nerfstudio method in-process, through nerfstudio's own entry points.

:func:`train_run` parses its arguments exactly as ``ns-train`` does (tyro over nerfstudio's method union, this
package's methods included) and runs ``nerfstudio.scripts.train.main``; :func:`eval_run` and :func:`render_run` run the
classes behind ``ns-eval`` and ``ns-render dataset``. Benchmarks and the test suite use these, so what they measure is
what a user's ``ns-train``/``ns-eval`` does.

Stock methods (``nerfacto``, ``splatfacto``) run here as the package's own methods do
(:func:`~ns_diffusion_methods.compat.package_run`): with the package's run-time fixes on, LPIPS unavailable instead
of fatal when its weights cannot be obtained offline, and unavailable metrics left out of ``ns-eval``'s JSON. Outside
these functions the stock methods are untouched.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ns_diffusion_methods.compat import package_run

#: flags for unattended runs: no viewer waiting after training, no wandb, a fixed run folder name
UNATTENDED_FLAGS: List[str] = [
    "--vis", "tensorboard",
    "--viewer.quit-on-train-completion", "True",
    "--timestamp", "run",
]


def _drop_unavailable_metrics(output_path: Path) -> Dict:
    """``ns-eval``'s JSON at ``output_path``, rewritten without the NaN entries of unavailable metrics."""
    from ns_diffusion_methods.metrics.lpips import drop_unavailable

    written = json.loads(output_path.read_text())
    if "results" in written:
        drop_unavailable(written["results"])
        output_path.write_text(json.dumps(written, indent=2))
    return written


def train_run(method: str, data: Path, output_dir: Path, flags: Sequence[str] = (),
              dataparser: Sequence[str] = (), configure: Optional[Callable[[Any], None]] = None) -> Tuple[Path, float]:
    """Run ``ns-train METHOD [UNATTENDED_FLAGS] --output-dir OUT --data DATA [flags] [dataparser...]``.

    Args:
        method: a registered method name (stock or plugin).
        data: the capture folder (``--data``).
        output_dir: ``--output-dir``.
        flags: further ``ns-train`` flags (later flags win).
        dataparser: the dataparser subcommand and its flags, e.g. ``["nerfstudio-data", "--eval-mode", "filename"]``.
        configure: optional ``configure(config)`` called on the parsed ``TrainerConfig`` before training, for settings
            no flag can express (e.g. a component config class of its own); it ends up in ``config.yml`` like a flag.

    Returns:
        The run's ``config.yml`` and the training wall time in seconds.
    """
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import main

    args = [method, *UNATTENDED_FLAGS, "--output-dir", str(output_dir), "--data", str(data), *flags, *dataparser]
    config = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    if configure is not None:
        configure(config)
    start = time.perf_counter()
    with package_run():
        main(config)
    return config.get_base_dir() / "config.yml", time.perf_counter() - start


def eval_run(config_path: Path, output_path: Optional[Path] = None,
             render_output_path: Optional[Path] = None, keep_saved_datamanager: bool = False) -> Dict:
    """Run ``ns-eval --load-config CONFIG``; returns the JSON it wrote (``results`` holds the metrics).

    nerfstudio's ``eval_setup`` replaces the saved datamanager class by the registered method's (for configs of older
    versions). A run trained with another datamanager than its method's default (a benchmark's stock ``nerfacto``
    with the ``VanillaDataManager``) would then be loaded with the wrong class: ``keep_saved_datamanager`` keeps the
    class the run was trained with.
    """
    import nerfstudio.scripts.eval as ns_eval

    output_path = output_path or config_path.parent / "eval.json"
    command = ns_eval.ComputePSNR(load_config=config_path, output_path=output_path,
                                  render_output_path=render_output_path)
    if not keep_saved_datamanager:
        with package_run():
            command.main()
        return _drop_unavailable_metrics(output_path)

    import functools

    import yaml

    saved_target = yaml.load(config_path.read_text(), Loader=yaml.Loader).pipeline.datamanager._target

    def restore(config):
        config.pipeline.datamanager._target = saved_target
        return config

    original = ns_eval.eval_setup
    ns_eval.eval_setup = functools.partial(original, update_config_callback=restore)
    try:
        with package_run():
            command.main()
    finally:
        ns_eval.eval_setup = original
    return _drop_unavailable_metrics(output_path)


def render_run(config_path: Path, output_path: Path, split: str = "test",
               outputs: Sequence[str] = ("rgb",)) -> List[Path]:
    """Run ``ns-render dataset --load-config CONFIG``; returns the image files it wrote."""
    from nerfstudio.scripts.render import DatasetRender

    with package_run():
        DatasetRender(load_config=config_path, output_path=output_path, split=split,
                      rendered_output_names=list(outputs)).main()
    return sorted(p for p in output_path.rglob("*") if p.suffix in (".png", ".jpg", ".jpeg"))


def latest_checkpoint(config_path: Path) -> Path:
    """The newest ``step-*.ckpt`` of a run."""
    checkpoints = sorted((config_path.parent / "nerfstudio_models").glob("step-*.ckpt"))
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint in {config_path.parent / 'nerfstudio_models'}")
    return checkpoints[-1]
