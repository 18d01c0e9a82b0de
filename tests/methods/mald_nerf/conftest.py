"""Tiny mald-nerf settings shared by the method's tests, applied through the same flags a user passes to ns-train."""

from pathlib import Path
from typing import List, Sequence

#: shrink mald-nerf-small further: a 4-level grid, 8 px patches, a few-channel discriminator, no eval images
TINY_FLAGS: List[str] = [
    "--pipeline.model.hidden-dim", "16",
    "--pipeline.model.hidden-dim-color", "16",
    "--pipeline.model.num-levels", "4",
    "--pipeline.model.log2-hashmap-size", "12",
    "--pipeline.model.max-res", "64",
    "--pipeline.model.num-proposal-samples-per-ray", "16", "8",
    "--pipeline.model.num-nerf-samples-per-ray", "8",
    "--pipeline.model.eval-num-rays-per-chunk", "2048",
    "--pipeline.datamanager.train-num-rays-per-batch", "64",
    "--pipeline.datamanager.mask-patch-size", "8",
    "--pipeline.datamanager.num-mask-patches", "2",
    "--pipeline.discriminator.base-channels", "8",
    "--pipeline.discriminator.max-channels", "16",
    # every loss term from the first step (the small preset starts the adversarial terms at step 100 and has no
    # hash decay; the tests check all of the method's terms)
    "--pipeline.adversarial-start-step", "0",
    "--pipeline.model.hash-decay-loss-mult", "0.1",
    "--steps-per-eval-image", "0",
    "--steps-per-eval-batch", "0",
]

#: the tiny random-weight LDM as the inpainter, customised in 2 steps of 1 crop. A backend is a subcommand: these come
#: after every other flag (the backend's own flags follow them)
TINY_LDM: List[str] = [
    "pipeline.inpainter:ldm",
    "--pipeline.inpainter.model", "tiny",
    "--pipeline.inpainter.customization.steps", "2",
    "--pipeline.inpainter.customization.batch-size", "1",
]


def trainer_config(data: Path, flags: Sequence[str] = (), method: str = "mald-nerf-small"):
    """The TrainerConfig that ``ns-train METHOD [TINY_FLAGS] [flags] --data DATA`` would run (CPU)."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    args = [method, "--machine.device-type", "cpu", *TINY_FLAGS, *flags]
    config = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    config.pipeline.datamanager.data = data
    return config


def build_pipeline(data: Path, flags: Sequence[str] = (), test_mode: str = "val"):
    """A MaldNerfPipeline built as ns-train builds it (no trainer), on the CPU."""
    config = trainer_config(data, flags)
    return config.pipeline.setup(device="cpu", test_mode=test_mode)
