"""Unavailable diffusion weights stop ``ns-train`` while the pipeline is built, before any training step.

Two cases for each pretrained slot, the inpainter of mald-nerf (``--pipeline.inpainter.model``) and the Difix fixer of
difix3d (``pipeline.fixer:difix --pipeline.fixer.model``): a Hugging Face id that is neither cached (an empty cache)
nor reachable (``HF_HUB_OFFLINE=1``, set for the whole test suite), and a local folder whose ``model_index.json`` is
there but whose UNet weights are not. The message names the model, the flag to change and what to do;
``ns-diffusion fix --model`` is checked as a real process in ``test_failure_commands.py``.
"""

from __future__ import annotations

from pathlib import Path

import harness
import pytest
from failure_helpers import FAST_MALD_NERF, LDM_INPAINTER, files_under

from ns_diffusion_methods.engine.trainer import DiffusionTrainer
from ns_diffusion_methods.errors import ModelUnavailableError

FAST_DIFIX3D = ["--vis", "tensorboard",
                "--pipeline.max-targets", "1"]


@pytest.fixture(autouse=True)
def _empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache (the suite is offline already), and training must never start."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(DiffusionTrainer, "train", lambda self: pytest.fail("training started"))


@pytest.fixture(scope="module")
def inpainter_without_unet_weights(tmp_path_factory) -> Path:
    from ns_diffusion_methods.inpainters.tiny import write_tiny_inpainting_model

    folder = write_tiny_inpainting_model(tmp_path_factory.mktemp("models") / "inpainter")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert (folder / "model_index.json").is_file()
    return folder


@pytest.fixture(scope="module")
def fixer_without_unet_weights(tmp_path_factory) -> Path:
    from ns_diffusion_methods.fixers.difix.model import DifixModel

    folder = DifixModel.tiny(seed=0).save_pretrained(tmp_path_factory.mktemp("models") / "fixer")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert (folder / "model_index.json").is_file()
    return folder


def _train_fails(method: str, capture: Path, output: Path, flags) -> str:
    with pytest.raises(ModelUnavailableError) as info:
        harness.train(method, capture, output, flags=flags, max_num_iterations=1)
    assert files_under(output) == []
    return str(info.value)


def test_uncached_unreachable_inpainter_id(object_removal_capture, tmp_path):
    model = "sd2-community/stable-diffusion-2-inpainting"
    message = _train_fails("mald-nerf-small", object_removal_capture, tmp_path / "outputs",
                           [*FAST_MALD_NERF, *LDM_INPAINTER, "--pipeline.inpainter.model", model])
    assert f"The model `{model}` is not in the Hugging Face cache" in message
    assert f"hf download {model}" in message and "huggingface-cli" not in message
    assert "--pipeline.inpainter.model PATH" in message


def test_inpainter_folder_without_unet_weights(object_removal_capture, inpainter_without_unet_weights, tmp_path):
    folder = inpainter_without_unet_weights
    message = _train_fails("mald-nerf-small", object_removal_capture, tmp_path / "outputs",
                           [*FAST_MALD_NERF, *LDM_INPAINTER, "--pipeline.inpainter.model", str(folder)])
    assert f"The model folder {folder}" in message and "no usable unet/ weights" in message
    assert "diffusion_pytorch_model" in message  # the file diffusers looked for
    assert "point --pipeline.inpainter.model at a complete copy" in message


def test_uncached_unreachable_fixer_id(sparse_views_capture, tmp_path):
    message = _train_fails("difix3d-nerfacto-small", sparse_views_capture, tmp_path / "outputs",
                           [*FAST_DIFIX3D, "pipeline.fixer:difix", "--pipeline.fixer.model",
                            "nvidia/difix_ref"])
    assert "The model `nvidia/difix_ref` is not in the Hugging Face cache" in message
    assert "pipeline.fixer:difix --pipeline.fixer.model PATH" in message


def test_fixer_folder_without_unet_weights(sparse_views_capture, fixer_without_unet_weights, tmp_path):
    folder = fixer_without_unet_weights
    message = _train_fails("difix3d-nerfacto-small", sparse_views_capture, tmp_path / "outputs",
                           [*FAST_DIFIX3D, "pipeline.fixer:difix", "--pipeline.fixer.model", str(folder)])
    assert f"The model folder {folder}" in message and "has no unet/diffusion_pytorch_model.safetensors" in message
    assert "point pipeline.fixer:difix --pipeline.fixer.model at a complete copy" in message
