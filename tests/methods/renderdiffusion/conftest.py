"""Fixtures of the RenderDiffusion tests: a tiny floor-background ``objects`` dataset and tiny model overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ns-train flags that shrink renderdiffusion-small to a few seconds per run on 2 CPU cores (16x16 images)
TINY_FLAGS = [
    "--pipeline.model.encoder.triplane-resolution", "16",
    "--pipeline.model.encoder.triplane-channels", "4",
    "--pipeline.model.encoder.block-out-channels", "8", "16",
    "--pipeline.model.encoder.attention-levels", "1",
    "--pipeline.model.encoder.norm-num-groups", "4",
    "--pipeline.model.encoder.upsample-channels", "8",
    "--pipeline.model.decoder.hidden-dim", "16",
    "--pipeline.model.renderer.num-samples", "8",
    "--pipeline.model.renderer.num-importance-samples", "8",
    "--pipeline.model.pixels-per-image", "32",
    "--pipeline.model.diffusion.num-inference-steps", "4",
    "--pipeline.datamanager.images-per-batch", "2",
    "--steps-per-save", "100",
    "--steps-per-eval-batch", "2",
    "--steps-per-eval-image", "2",
]


@pytest.fixture(scope="session")
def floor_objects(tmp_path_factory) -> Path:
    """A tiny ``objects`` dataset with the floor-and-shadows background RenderDiffusion trains on."""
    from ns_diffusion_methods.synthetic import write_objects

    return write_objects(tmp_path_factory.mktemp("captures") / "objects-floor", seed=0, image_size=16, num_train=3,
                         num_test=2, views=(3, 5), background="floor", max_primitives=1)
