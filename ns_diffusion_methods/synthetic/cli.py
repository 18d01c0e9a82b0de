"""``ns-diffusion-synth KIND --output DIR [--seed N] [--image-size N] [--num-views N]``: write a synthetic capture.

Kinds:

- ``object-removal``: a textured room with one removable object; nerfstudio format (training views with the object
  and object masks, evaluation views without it) plus the SPIn-NeRF layout under ``spinnerf/``;
- ``sparse-views``: training views on one side, evaluation views on the opposite side (Difix3D setting);
- ``objects``: procedural objects in the SRN layout (``train/``, ``test/``, ``meta.json``).

The capture is written to a temporary folder next to ``--output`` and renamed into place when complete. An existing
``--output`` is replaced only if it is a previous capture (it holds ``capture.json``) or empty.
"""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ns-diffusion-synth", description="Write a synthetic capture, deterministically from a seed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  ns-diffusion-synth object-removal --output data/synthetic-removal\n"
               "  ns-train nerfacto --data data/synthetic-removal nerfstudio-data --eval-mode filename\n"
               "  ns-diffusion-synth objects --output data/objects --background floor\n")
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
    print(f"Wrote a {args.kind} capture to {Path(path).absolute()} in {elapsed:.1f} s")
    return 0


def entrypoint() -> None:
    """Console script ``ns-diffusion-synth``."""
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
