"""``ns-diffusion``: the package's commands, one subcommand each.

Each subcommand is a tyro dataclass with a ``main()`` method, imported only when it is run so that ``--help`` and
every other command stay fast. A method-specific command (``sample``, ``inpaint``) takes the method name as a second
word: ``ns-diffusion sample ssdnerf --load-config CONFIG``.

To add a command, add one line to :data:`COMMANDS`: ``"name": ("module.path", "ClassName", "one-line help")``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

from rich.console import Console

#: command -> (module, dataclass with a main() method, help). Nested commands use "outer inner".
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "demo": ("ns_diffusion_methods.methods.mald_nerf.commands", "DemoCommand",
             "Remove an object from a synthetic 3D capture with MALD-NeRF on the CPU: capture, train, evaluate, "
             "before/after picture."),
    "sample ssdnerf": ("ns_diffusion_methods.methods.ssdnerf.commands", "SampleCommand",
                       "Generate objects with a trained SSDNeRF run (DDIM) and write turntables."),
    "sample renderdiffusion": ("ns_diffusion_methods.methods.renderdiffusion.commands", "SampleCommand",
                               "Generate objects with a trained RenderDiffusion run and write turntables."),
    "inpaint renderdiffusion": ("ns_diffusion_methods.methods.renderdiffusion.commands", "InpaintCommand",
                                "3D-aware RePaint inpainting of an image with a trained RenderDiffusion run."),
    "reconstruct renderdiffusion": ("ns_diffusion_methods.methods.renderdiffusion.commands", "ReconstructCommand",
                                    "Single-view 3D reconstruction of an image with a trained RenderDiffusion run: "
                                    "turntable and triplane."),
    "reconstruct ssdnerf": ("ns_diffusion_methods.methods.ssdnerf.commands", "ReconstructCommand",
                            "Reconstruct an object from 1 or 2 posed images with a trained SSDNeRF run (guided DDIM, "
                            "then fine-tuning): turntable, re-rendered inputs and code."),
    "fix": ("ns_diffusion_methods.fixers.commands", "FixCommand",
            "Repair renders with the Difix single-step diffusion fixer (optionally with reference images)."),
    "train-fixer": ("ns_diffusion_methods.fixers.commands", "TrainFixerCommand",
                    "Fine-tune Difix on (degraded render, clean image[, reference]) pairs."),
    "fixer-pairs": ("ns_diffusion_methods.fixers.commands", "FixerPairsCommand",
                    "Make fixer training pairs from a nerfstudio run (renders vs. real images, nearest reference)."),
    "benchmark": ("ns_diffusion_methods.benchmark.commands", "BenchmarkCommand",
                  "Run one of the package's benchmarks (or a definition file) and write JSON, Markdown and a plot."),
    "add-masks": ("ns_diffusion_methods.data.commands", "AddMasksCommand",
                  "Add object masks from a folder to a nerfstudio capture (object_mask_path per frame), for "
                  "mald-nerf."),
    "masks": ("ns_diffusion_methods.data.commands", "MasksCommand",
              "Object masks of every frame from a 3D box around the object (the viewer's crop box) and the depth "
              "of a trained run: no painting; for mald-nerf."),
    "point-masks": ("ns_diffusion_methods.data.commands", "PointMasksCommand",
                    "Object masks of every frame from a click on the object in one frame: SAM there, carried to "
                    "the other frames by a trained run's depth and refined by SAM; for mald-nerf."),
    "masks-viewer": ("ns_diffusion_methods.data.commands", "MasksViewerCommand",
                     "Open a trained run in the viewer with a panel to place that box around the object and write "
                     "the masks."),
    "customize": ("ns_diffusion_methods.inpainters.commands", "CustomizeCommand",
                  "LoRA-customise an inpainting LDM on a capture with object masks (MALD-NeRF; cached)."),
}

CONSOLE = Console(stderr=True)


def _usage() -> str:
    lines = ["usage: ns-diffusion COMMAND [--help] [ARGS...]", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def _resolve(argv: List[str]) -> Tuple[Optional[str], List[str]]:
    """The longest command name that prefixes ``argv`` (``sample ssdnerf`` before ``sample``), and the rest."""
    for n in (2, 1):
        name = " ".join(argv[:n])
        if len(argv) >= n and name in COMMANDS:
            return name, argv[n:]
    return None, argv


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch to a subcommand; returns the process exit code."""
    import tyro

    from ns_diffusion_methods.compat import package_run

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = _resolve(argv)
    if name is None:
        nested = sorted(n for n in COMMANDS if n.split(" ")[0] == argv[0])
        if nested:
            CONSOLE.print(f"[red]`ns-diffusion {argv[0]}` needs a method: one of "
                          f"{', '.join(n.split(' ', 1)[1] for n in nested)}.[/red]")
        else:
            CONSOLE.print(f"[red]Unknown command `{argv[0]}`.[/red]\n{_usage()}")
        return 2
    module_name, class_name, help_ = COMMANDS[name]
    command_cls = getattr(importlib.import_module(module_name), class_name)
    preamble = getattr(command_cls, "help_preamble", None)
    if preamble is not None and ("--help" in rest or "-h" in rest):
        text = preamble(rest)
        if text:
            print(text)
    # booleans take a value, {True,False}, as in ns-train
    command = tyro.cli(command_cls, args=rest, prog=f"ns-diffusion {name}", description=help_,
                       config=(tyro.conf.FlagConversionOff,))
    with package_run():  # the commands load runs and build models as the package's methods do
        result = command.main()
    return int(result) if isinstance(result, int) else 0


def entrypoint() -> None:
    """Console-script entry point: a :class:`~ns_diffusion_methods.errors.UserFacingError` ends the command with
    ``Error: <message>`` on stderr and status 1, without a traceback."""
    from ns_diffusion_methods.errors import UserFacingError, print_user_error

    try:
        sys.exit(main())
    except UserFacingError as err:
        print_user_error(err)
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
