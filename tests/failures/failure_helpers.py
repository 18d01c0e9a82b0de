"""Helpers of the failure tests: commands run as a user runs them, what their failures print, capture frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

#: the console scripts of this environment (ns-train, ns-eval, ns-diffusion)
BIN = Path(sys.executable).parent

#: a mald-nerf-small run that reaches training fast: a tiny field, few rays, no evaluation (the OpenCV inpainter)
FAST_MALD_NERF: List[str] = [
    "--vis", "tensorboard",
    "--pipeline.model.hidden-dim", "16",
    "--pipeline.model.hidden-dim-color", "16",
    "--pipeline.model.num-levels", "4",
    "--pipeline.model.log2-hashmap-size", "12",
    "--pipeline.model.num-proposal-samples-per-ray", "16", "8",
    "--pipeline.model.num-nerf-samples-per-ray", "8",
    "--pipeline.datamanager.train-num-rays-per-batch", "64",
    "--pipeline.datamanager.mask-patch-size", "8",
    "--pipeline.discriminator.base-channels", "8",
    "--pipeline.discriminator.max-channels", "16",
    "--steps-per-eval-image", "0",
    "--steps-per-eval-batch", "0",
]
#: FAST_MALD_NERF with the LDM inpainter instead, not customised; a subcommand: after FAST_MALD_NERF, and the model
#: flag (--pipeline.inpainter.model) after it
LDM_INPAINTER: List[str] = ["pipeline.inpainter:ldm", "--pipeline.inpainter.customize", "False"]


def run_command(name: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the console script ``name`` with ``args`` in a subprocess, as a user would; stdout and stderr as text."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / name), *(str(a) for a in args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def user_error(result: subprocess.CompletedProcess) -> str:
    """The ``Error: ...`` message of a command that failed as it should: status 1 and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Error: " in result.stderr, result.stderr[-3000:]
    return result.stderr[result.stderr.index("Error: "):]


def files_under(folder: Path) -> List[Path]:
    """Every file below ``folder`` (empty when it does not exist)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def train_frames(transforms: dict) -> List[dict]:
    """The training frames of a synthetic capture's ``transforms.json``."""
    return [frame for frame in transforms["frames"] if "_train_" in frame["file_path"]]


def eval_frames(transforms: dict) -> List[dict]:
    """The evaluation frames of a synthetic capture's ``transforms.json``."""
    return [frame for frame in transforms["frames"] if "_eval_" in frame["file_path"]]
