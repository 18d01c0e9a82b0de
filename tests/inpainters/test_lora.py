"""LoRA adapters: save/load round trip through the inpainter's ``lora_path``, and refusal of foreign weights."""

from __future__ import annotations

import pytest
import torch

from ns_diffusion_methods.errors import ModelUnavailableError
from ns_diffusion_methods.inpainters import LDMInpainterConfig
from ns_diffusion_methods.inpainters.lora import add_lora, load_lora, save_lora
from ns_diffusion_methods.inpainters.tiny import tiny_inpainting_components


def _unet_output(unet, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 9, 4, 4, generator=generator)
    text = torch.randn(1, 77, 16, generator=generator)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=text).sample


def test_round_trip_through_lora_path(tmp_path):
    unet = tiny_inpainting_components()["unet"]
    base = _unet_output(unet)
    add_lora(unet, rank=2, alpha=2)
    with torch.no_grad():  # LoRA B starts at zero (identity); make the adapter do something
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    adapted = _unet_output(unet)
    assert not torch.allclose(adapted, base)
    save_lora(unet, tmp_path / "lora")

    inpainter = LDMInpainterConfig(model="tiny", lora_path=tmp_path / "lora").setup(device="cpu")
    assert torch.allclose(_unet_output(inpainter.unet), adapted, atol=1e-6)
    assert not any(p.requires_grad for p in inpainter.unet.parameters())


def test_foreign_or_incomplete_lora_is_refused(tmp_path):
    with pytest.raises(ModelUnavailableError, match="adapter_config.json"):
        load_lora(tiny_inpainting_components()["unet"], tmp_path)
    # adapter made on the attention projections only of the keys, loaded into a UNet expecting all four
    unet = tiny_inpainting_components()["unet"]
    add_lora(unet, rank=2, alpha=2, target_modules=["to_k"])
    save_lora(unet, tmp_path / "partial")
    config = (tmp_path / "partial" / "adapter_config.json")
    text = config.read_text().replace('"to_k"', '"to_k", "to_q"')
    config.write_text(text)
    with pytest.raises(ModelUnavailableError, match="lack"):
        load_lora(tiny_inpainting_components()["unet"], tmp_path / "partial")
