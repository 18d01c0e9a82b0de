"""``ns-diffusion fix``, ``ns-diffusion train-fixer`` and ``ns-diffusion fixer-pairs``: one ``<Name>Command`` each.

    ns-diffusion fix --input renders/ --reference train_images/ --output fixed/ [--model nvidia/difix_ref]
    ns-diffusion fixer-pairs --load-config outputs/scene/nerfacto/RUN/config.yml --output pairs/
    ns-diffusion train-fixer --data pairs/data.json --output outputs/my-fixer
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

from ns_diffusion_methods.cli.outputs import default_output
from ns_diffusion_methods.data.images import list_images
from ns_diffusion_methods.diffusion.precision import DType
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.fixers.training import FixerTrainingConfig


def match_references(inputs: List[Path], reference: Optional[Path]) -> List[Optional[Path]]:
    """The reference file of each input: one file for all; in a folder the file with the same stem, else the file
    at the same position (the folders must then hold equally many images)."""
    if reference is None:
        return [None] * len(inputs)
    references = list_images(reference)
    if Path(reference).is_file():
        return [references[0]] * len(inputs)
    by_stem: Dict[str, Path] = {p.stem: p for p in references}
    if all(p.stem in by_stem for p in inputs):
        return [by_stem[p.stem] for p in inputs]
    if len(references) == len(inputs):
        return list(references)
    raise DataError(f"Cannot pair the {len(inputs)} inputs with the {len(references)} references in {reference}: "
                    f"give each reference the name of its input, or the same number of images in the same order.")


@dataclass
class FixCommand:
    """Repair renders with Difix: one fixed image per input, with the same name, in --output."""

    input: Path
    """An image, or a folder of images, to fix."""
    output: Optional[Path] = None
    """Folder for the fixed images (created; must differ from the input folder). They are moved there when all are
    done, so a failed run leaves it as it was. Default: outputs/ns-diffusion/fix/<timestamp>."""
    reference: Optional[Path] = None
    """Reference image(s): one image for all inputs, or a folder (matched by name, else by sorted order)."""
    model: str = "nvidia/difix_ref"
    """nvidia/difix_ref, nvidia/difix, a folder in the same layout (train-fixer output), or tiny."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    dtype: DType = "auto"
    """Compute precision: auto = bfloat16 on CUDA, float32 on CPU."""
    chunk_size: int = 2
    """Images per network pass (lower it to bound memory)."""
    seed: int = 42
    """Seed of the VAE posterior sample."""
    resolution: Optional[Tuple[int, int]] = None
    """Working size (H, W); default: each image's size rounded to a multiple of 8."""

    def main(self) -> int:
        import shutil

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from ns_diffusion_methods.compat.device import default_device_type
        from ns_diffusion_methods.data.checks import check_image_files
        from ns_diffusion_methods.data.images import save_image
        from ns_diffusion_methods.diffusion.untrained import TINY, untrained_warning
        from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig

        console = Console(stderr=True)
        if self.output is None:
            self.output = default_output("fix")
        inputs = list_images(self.input)
        references = match_references(inputs, self.reference)
        if self.output.resolve() in {p.parent.resolve() for p in inputs}:
            raise DataError(f"--output {self.output} is the input folder: the fixed images would overwrite the "
                            f"renders. Choose another folder.")
        check_image_files(sorted({*inputs, *(r for r in references if r is not None)}),
                          hint="Replace these files or remove them from --input / --reference; nothing was written.")
        device = default_device_type() if self.device == "auto" else self.device
        config = DifixFixerConfig(model=self.model, dtype=self.dtype, chunk_size=self.chunk_size, seed=self.seed,
                             resolution=self.resolution)
        if self.model == TINY:
            console.print(f"[bold yellow]Warning: {untrained_warning(['--model tiny'])}[/bold yellow]")
        console.print(f"Loading {self.model} on {device} ...")
        fixer = config.setup(device=device)
        # the images are written to a staging folder and moved into --output only when all are done: a failed or
        # interrupted run leaves --output as it was, never half of the outputs looking complete
        staging = self.output.parent / f".{self.output.name}.partial-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            columns = (TextColumn("[bold]fix"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("fix", total=len(inputs))
                for start in range(0, len(inputs), self.chunk_size):
                    chunk = slice(start, start + self.chunk_size)
                    fixed = fixer.fix_images(inputs[chunk], references[chunk], seed=self.seed + start)
                    for path, image in zip(inputs[chunk], fixed):
                        save_image(image, staging / path.name)
                    progress.update(task, advance=len(fixed))
            self.output.mkdir(parents=True, exist_ok=True)
            for path in inputs:
                os.replace(staging / path.name, self.output / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        console.print(f"Wrote {len(inputs)} fixed image(s) to {self.output}.")
        return 0


@dataclass
class TrainFixerCommand(FixerTrainingConfig):
    """Fine-tune Difix on (degraded render, clean image[, reference]) pairs (Difix3D+'s recipe)."""

    def main(self) -> int:
        from ns_diffusion_methods.fixers.training import train_fixer

        train_fixer(self)
        return 0


@dataclass
class FixerPairsCommand:
    """Make fixer training pairs from a trained nerfstudio run: renders of held-out (or training) views against the
    real images, with the nearest training image as reference (Difix3D+'s data curation)."""

    load_config: Path
    """config.yml of a nerfstudio run trained on a subset of the views (for --split eval) or stopped early (for
    --split train)."""
    output: Optional[Path] = None
    """Folder for the images and data.json (pairs of several runs can be collected in one folder). Default:
    outputs/ns-diffusion/fixer-pairs/<timestamp>."""
    split: Literal["eval", "train"] = "eval"
    """eval: render the held-out views (sparse-reconstruction artifacts); train: render the training views
    (under-fitting artifacts)."""
    reference: bool = True
    """Attach the nearest training image as reference view."""
    test_fraction: float = 0.1
    """Fraction of the pairs kept for held-out evaluation ("test" in data.json), chosen by a hash of the name."""
    max_images: Optional[int] = None
    """Render at most this many views."""

    def main(self) -> int:
        from rich.console import Console

        from ns_diffusion_methods.fixers.curation import pairs_from_run

        output = self.output if self.output is not None else default_output("fixer-pairs")
        index = pairs_from_run(self.load_config, output, split=self.split, reference=self.reference,
                               test_fraction=self.test_fraction, max_images=self.max_images)
        Console(stderr=True).print(f"Pairs written to {index}; train with `ns-diffusion train-fixer --data {index}`.")
        return 0
