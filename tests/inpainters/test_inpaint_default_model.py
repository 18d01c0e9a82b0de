"""The default inpainting model is the maintained SD-2-inpainting copy, and an id that is neither cached nor reachable
ends in an error naming the current Hub CLI (`hf download ID`)."""

from __future__ import annotations

import pytest

from ns_diffusion_methods.diffusion.hub import MOVED_MODELS, resolve_pretrained
from ns_diffusion_methods.errors import ModelUnavailableError
from ns_diffusion_methods.inpainters import LDMInpainterConfig
from ns_diffusion_methods.inpainters.commands import CustomizeCommand
from ns_diffusion_methods.inpainters.ldm import DEFAULT_MODEL, REQUIRED_LAYOUT
from ns_diffusion_methods.inpainters.tiny import write_tiny_inpainting_model

SD2_INPAINTING = "sd2-community/stable-diffusion-2-inpainting"


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache; the suite is offline (HF_HUB_OFFLINE=1), so nothing can be downloaded."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))


def test_the_default_model_is_the_maintained_sd2_inpainting_copy():
    from ns_diffusion_methods.methods.mald_nerf.config import mald_nerf_config

    assert DEFAULT_MODEL == SD2_INPAINTING
    assert LDMInpainterConfig().model == SD2_INPAINTING
    assert mald_nerf_config.pipeline.inpainter.model == SD2_INPAINTING
    assert CustomizeCommand(data=".").model == SD2_INPAINTING
    assert MOVED_MODELS["stabilityai/stable-diffusion-2-inpainting"] == SD2_INPAINTING


def test_offline_error_names_the_id_and_hf_download(empty_hub_cache):
    with pytest.raises(ModelUnavailableError) as info:
        LDMInpainterConfig().setup(device="cpu")  # the default model, through the loading code
    message = str(info.value)
    assert f"The model `{SD2_INPAINTING}` is not in the Hugging Face cache" in message
    assert f"`hf download {SD2_INPAINTING}`" in message
    assert "huggingface-cli" not in message
    assert "--pipeline.inpainter.model PATH" in message and "unet/config.json" in message
    assert "removed from the Hub" not in message


def test_the_removed_stabilityai_id_points_to_its_copy(empty_hub_cache):
    old = "stabilityai/stable-diffusion-2-inpainting"
    with pytest.raises(ModelUnavailableError) as info:
        resolve_pretrained(old, required=REQUIRED_LAYOUT, flag="--pipeline.inpainter.model")
    message = str(info.value)
    assert f"`{old}` was removed from the Hub" in message
    assert f"--pipeline.inpainter.model {SD2_INPAINTING}" in message
    assert f"`hf download {old}`" in message and "huggingface-cli" not in message


def test_a_local_folder_still_loads_whatever_the_default(tmp_path, empty_hub_cache):
    folder = write_tiny_inpainting_model(tmp_path / "sd2-inpainting-copy")
    assert resolve_pretrained(str(folder), required=REQUIRED_LAYOUT) == folder
    inpainter = LDMInpainterConfig(model=str(folder), num_inference_steps=2).setup(device="cpu")
    assert inpainter.num_train_timesteps == 1000
