"""Difix model: the single-step maths, the skip/LoRA layout of the published weights, saving and loading."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ns_diffusion_methods.diffusion.tiny import write_tiny_tokenizer
from ns_diffusion_methods.errors import ModelUnavailableError
from ns_diffusion_methods.fixers.difix.model import SD_TURBO_VAE_CONFIG, DifixModel
from ns_diffusion_methods.fixers.difix.vae import LORA_ADAPTER, decode_with_skips, encode_with_skips, skip_conv_channels
from ns_diffusion_methods.fixers.difix.weights import PROMPT_FILE


def _images(batch: int, views: int, size=(32, 40), seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, views, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_single_step_is_the_clean_latent_prediction_decoded_with_skips(tiny_difix):
    model = tiny_difix
    images = _images(2, 2)
    with torch.no_grad():
        out = model(images, generator=torch.Generator().manual_seed(5), decode_views="all")

        # by hand: the same posterior sample, one UNet call at t = 199 with views mixed, x0, decode with the skips
        flat = images.flatten(0, 1)
        moments, skips = encode_with_skips(model.vae, flat)
        mean, logvar = moments.chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
        z = (mean + torch.exp(0.5 * logvar) * noise) * model.vae.config.scaling_factor
        eps = model.unet(z, torch.full((4,), 199), encoder_hidden_states=model.prompt_embeds.expand(4, -1, -1),
                         cross_attention_kwargs={"num_views": 2}).sample
        a = model.scheduler.alphas_cumprod[199].item()
        z0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        expected = decode_with_skips(model.vae, z0 / model.vae.config.scaling_factor, skips).clamp(-1, 1)
    assert abs(a - 0.75524) < 1e-4 and model.timestep == 199
    torch.testing.assert_close(out.flatten(0, 1), expected, rtol=1e-4, atol=1e-5)
    # "first" decodes view 0 only, with its own skips: the same images as view 0 of "all"
    with torch.no_grad():
        first = model(images, generator=torch.Generator().manual_seed(5), decode_views="first")
    torch.testing.assert_close(first[:, 0], out[:, 0], rtol=1e-4, atol=1e-5)


def test_skips_and_lora_change_the_output_and_use_the_published_layout(tiny_difix):
    model = tiny_difix
    assert skip_conv_channels(SD_TURBO_VAE_CONFIG["block_out_channels"]) == [(512, 512), (256, 512), (128, 512),
                                                                            (128, 256)]
    keys = set(model.vae.state_dict())
    for k in range(1, 5):
        assert {f"decoder.skip_conv_{k}.base_layer.weight", f"decoder.skip_conv_{k}.lora_A.{LORA_ADAPTER}.weight",
                f"decoder.skip_conv_{k}.lora_B.{LORA_ADAPTER}.weight"} <= keys
    assert "decoder.conv_in.lora_A.vae_skip.weight" in keys and "decoder.conv_out.base_layer.bias" in keys
    assert "decoder.mid_block.attentions.0.to_q.lora_B.vae_skip.weight" in keys
    assert not any(".lora_" in k for k in keys if k.startswith("encoder."))  # the encoder stays plain
    images = _images(1, 1).flatten(0, 1)
    with torch.no_grad():
        moments, skips = encode_with_skips(model.vae, images)
        latents = moments.chunk(2, dim=1)[0]
        with_skips = decode_with_skips(model.vae, latents, skips)
        without = decode_with_skips(model.vae, latents, None)
        model.vae.disable_adapters()
        try:
            without_lora = decode_with_skips(model.vae, latents, skips)
        finally:
            model.vae.enable_adapters()
    assert not torch.allclose(with_skips, without, atol=1e-3)
    assert not torch.allclose(with_skips, without_lora, atol=1e-3)


def test_save_then_load_reproduces_outputs_exactly(tiny_difix, tmp_path):
    folder = tiny_difix.save_pretrained(tmp_path / "difix")
    loaded = DifixModel.from_pretrained(folder).eval()
    images = _images(2, 3, seed=1)
    with torch.no_grad():
        expected = tiny_difix(images, generator=torch.Generator().manual_seed(0))
        got = loaded(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(expected, got)
    assert loaded.reference_views and loaded.prompt == "remove degradation"
    assert json.loads((folder / "vae" / "config.json").read_text())["lora_rank"] == 4


def test_a_missing_or_unexpected_weight_is_refused_with_the_key_named(tiny_difix, tmp_path):
    folder = tiny_difix.save_pretrained(tmp_path / "difix")
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop("decoder.skip_conv_2.base_layer.weight")
    save_file(state, str(weights))
    with pytest.raises(ModelUnavailableError, match=r"missing keys: decoder\.skip_conv_2\.base_layer\.weight"):
        DifixModel.from_pretrained(folder)

    folder = tiny_difix.save_pretrained(tmp_path / "difix2")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(ModelUnavailableError, match=r"unexpected keys: extra\.weight"):
        DifixModel.from_pretrained(folder)

    with pytest.raises(ModelUnavailableError, match="does not exist"):
        DifixModel.from_pretrained(tmp_path / "nowhere")


def _published_layout(model: DifixModel, folder, tmp_path):
    """Turn a saved folder into the published layout: text_encoder/ + tokenizer/ instead of the cached embedding."""
    from ns_diffusion_methods.diffusion.tiny import tiny_components

    parts = tiny_components(tmp_path / "tok", seed=0)
    parts["text_encoder"].save_pretrained(str(folder / "text_encoder"))
    shutil.copytree(write_tiny_tokenizer(tmp_path / "tok"), folder / "tokenizer")
    (folder / PROMPT_FILE).unlink()
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("ns_diffusion_methods")
    (folder / "model_index.json").write_text(json.dumps(index))
    return parts


def test_published_layout_computes_the_prompt_from_its_text_encoder(tiny_difix, tmp_path):
    folder = tiny_difix.save_pretrained(tmp_path / "difix")
    _published_layout(tiny_difix, folder, tmp_path)
    loaded = DifixModel.from_pretrained(folder)
    torch.testing.assert_close(loaded.prompt_embeds, tiny_difix.prompt_embeds)  # same tiny CLIP, same prompt
    assert not loaded.reference_views  # nvidia/difix: no custom cross-view UNet code
    (folder / "unet" / "unet_2d_condition.py").write_text("# custom cross-view UNet of nvidia/difix_ref\n")
    assert DifixModel.from_pretrained(folder).reference_views
    other = DifixModel.from_pretrained(folder, prompt="a photo")
    assert not torch.allclose(other.prompt_embeds, loaded.prompt_embeds)


def test_a_cached_embedding_cannot_serve_another_prompt(tiny_difix, tmp_path):
    folder = tiny_difix.save_pretrained(tmp_path / "difix")
    with pytest.raises(ModelUnavailableError, match="a photo"):
        DifixModel.from_pretrained(folder, prompt="a photo")


def test_fresh_adapters_start_a_plain_sd_vae_as_the_plain_vae(tiny_difix, tmp_path):
    folder = tiny_difix.save_pretrained(tmp_path / "difix")
    # a plain SD-Turbo-style VAE: base weights under their plain names, no skips, no LoRA
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    plain = {k.replace(".base_layer", ""): v for k, v in state.items()
             if ".lora_" not in k and "skip_conv_" not in k}
    save_file(plain, str(weights))
    with pytest.raises(ModelUnavailableError, match="unexpected keys"):
        DifixModel.from_pretrained(folder)  # without the flag, a plain VAE is refused
    fresh = DifixModel.from_pretrained(folder, fresh_adapters=True)
    lora_b = [p for n, p in fresh.vae.named_parameters() if ".lora_B." in n]
    skips = [p for n, p in fresh.vae.named_parameters() if "skip_conv_" in n and "base_layer" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    assert len(skips) == 4 and all(torch.all(p == 1e-5) for p in skips)
    for name, param in fresh.vae.named_parameters():
        if ".lora_" not in name and "skip_conv_" not in name:
            torch.testing.assert_close(param, state[name])


def test_an_unavailable_hub_model_is_an_error_naming_it_never_random_weights():
    # the test suite is offline and the Hugging Face cache holds no Difix weights
    with pytest.raises(ModelUnavailableError, match="nvidia/difix_ref"):
        DifixModel.from_pretrained("nvidia/difix_ref")
