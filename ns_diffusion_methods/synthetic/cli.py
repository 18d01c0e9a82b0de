"""``ns-diffusion-synth KIND --output DIR [--seed N] [--image-size N] [--num-views N]``: write a synthetic capture.

Kinds:

- ``object-removal``: a textured room with one removable object; nerfstudio format (training views with the object
  and object masks, evaluation views without it) plus the SPIn-NeRF layout under ``spinnerf/``;
- ``sparse-views``: training views on one side, evaluation views on the opposite side (Difix3D setting);
- ``objects``: procedural objects in the SRN layout (``train/``, ``test/``, ``meta.json``).

The capture is written to a temporary folder next to ``--output`` and renamed into place when complete. An existing
``--output`` is replaced only if it is a previous capture (it holds ``capture.json``) or empty. The command then prints
the ``ns-train`` command that trains the package's small preset for the capture (:func:`train_command`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ns_diffusion_methods.errors import UserFacingError

KINDS = ("object-removal", "sparse-views", "objects")
SCENE_DEFAULTS = {"image_size": 96, "num_views": 24, "num_eval_views": 8}
OBJECT_DEFAULTS = {"image_size": 32, "num_views": 16, "num_test_views": 24, "num_train": 64, "num_test": 8,
                   "background": "white", "max_primitives": 3}
CONSOLE = Console(stderr=True)


def train_command(kind: str, data: Path, background: str = "white") -> List[str]:
    """The ``ns-train`` command (argv) that trains the method made for a capture of ``kind``.

    - ``object-removal``: ``mald-nerf-small`` (OpenCV inpainter, no weights needed), which reads the capture's object
      masks with its default dataparser, ``object-mask-data``;
    - ``sparse-views``: ``difix3d-nerfacto-small`` (nerfstudio's dataparser reads the capture's split lists);
    - ``objects``: ``ssdnerf-small`` on a white background, ``renderdiffusion-small`` on the floor background, both
      with the ``srn-data`` dataparser.
    """
    if kind == "object-removal":
        return ["ns-train", "mald-nerf-small", "--data", str(data)]
    if kind == "sparse-views":
        return ["ns-train", "difix3d-nerfacto-small", "--data", str(data)]
    if kind == "objects":
        method = "renderdiffusion-small" if background == "floor" else "ssdnerf-small"
        return ["ns-train", method, "--data", str(data), "srn-data"]
    raise ValueError(f"`kind` must be one of {', '.join(KINDS)}, but got {kind!r}.")


def _next_steps(kind: str, data: Path, background: str) -> List[str]:
    """What to run next, as lines to print."""
    lines = ["Train on it:", f"  {shlex.join(train_command(kind, data, background))}"]
    if kind == "sparse-views":
        lines.append("  (the Difix fixer's weights, nvidia/difix_ref, are downloaded on first use; offline, end the "
                     "command with `pipeline.fixer:difix --pipeline.fixer.model tiny` for a random-weight smoke run, "
                     "or `pipeline.fixer:identity` for the no-fixer ablation)")
    elif kind == "objects":
        other = "white" if background == "floor" else "floor"
        lines.append(f"  (for {'ssdnerf-small' if other == 'white' else 'renderdiffusion-small'}, write the objects "
                     f"with --background {other})")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ns-diffusion-synth", description="Write a synthetic capture, deterministically from a seed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  ns-diffusion-synth object-removal --output data/synthetic-removal\n"
               "  ns-train mald-nerf-small --data data/synthetic-removal\n"
               "  ns-diffusion-synth objects --output data/objects-floor --background floor\n"
               "  ns-train renderdiffusion-small --data data/objects-floor srn-data\n")
    parser.add_argument("kind", choices=KINDS, help="What to write.")
    parser.add_argument("--output", type=Path, required=True, help="Capture folder to create (or replace, if it is "
                                                                    "a previous capture).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed; same seed, same files. Default: 0.")
    parser.add_argument("--image-size", type=int, default=None,
                        help="Image width in pixels (scenes: height = 3/4 width, default 96; objects: square, "
                             "default 32).")
    parser.add_argument("--num-views", type=int, default=None,
                        help="Scenes: training views (default 24). Objects: views per training object (default 16).")
    scenes = parser.add_argument_group("object-removal and sparse-views")
    scenes.add_argument("--num-eval-views", type=int, default=None, help="Evaluation views. Default: 8.")
    objects = parser.add_argument_group("objects")
    objects.add_argument("--num-test-views", type=int, default=None,
                         help="Views per test object (an even azimuth ring). Default: 24.")
    objects.add_argument("--num-train", type=int, default=None, help="Training objects. Default: 64.")
    objects.add_argument("--num-test", type=int, default=None, help="Test objects. Default: 8.")
    objects.add_argument("--background", choices=("white", "floor"), default=None,
                         help="white (no floor) or floor (floor disc with shadows, grey backdrop). Default: white.")
    objects.add_argument("--max-primitives", type=int, default=None, help="1 to this many primitives per object. "
                                                                          "Default: 3.")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    object_only = ("num_test_views", "num_train", "num_test", "background", "max_primitives")
    scene_only = ("num_eval_views",)
    not_for_kind = scene_only if args.kind == "objects" else object_only
    wrong = [name for name in not_for_kind if getattr(args, name) is not None]
    if wrong:
        parser.error(f"{', '.join('--' + name.replace('_', '-') for name in wrong)} do(es) not apply to {args.kind}.")

    from ns_diffusion_methods.synthetic import captures  # imports torch: after argument checks

    def pick(name: str, defaults: dict):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    start = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("views"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=CONSOLE, transient=True) as bar:
            task = bar.add_task(f"Rendering {args.kind}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if args.kind == "objects":
                path = captures.write_objects(
                    args.output, seed=args.seed, image_size=pick("image_size", OBJECT_DEFAULTS),
                    num_train=pick("num_train", OBJECT_DEFAULTS), num_test=pick("num_test", OBJECT_DEFAULTS),
                    views=(pick("num_views", OBJECT_DEFAULTS), pick("num_test_views", OBJECT_DEFAULTS)),
                    background=pick("background", OBJECT_DEFAULTS),
                    max_primitives=pick("max_primitives", OBJECT_DEFAULTS), progress=progress)
            else:
                writer = captures.write_object_removal if args.kind == "object-removal" else captures.write_sparse_views
                path = writer(args.output, seed=args.seed, image_size=pick("image_size", SCENE_DEFAULTS),
                              num_views=pick("num_views", SCENE_DEFAULTS),
                              num_eval_views=pick("num_eval_views", SCENE_DEFAULTS), progress=progress)
    except UserFacingError as error:
        CONSOLE.print(str(error), style="red", markup=False, highlight=False, soft_wrap=True)
        return 1
    elapsed = time.perf_counter() - start
    data = Path(path).absolute()
    print(f"Wrote the {args.kind} capture to {data} in {elapsed:.1f} s.")
    background = pick("background", OBJECT_DEFAULTS) if args.kind == "objects" else "white"
    print("\n".join(_next_steps(args.kind, data, background)))
    return 0


def entrypoint() -> None:
    """Console script ``ns-diffusion-synth``."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
