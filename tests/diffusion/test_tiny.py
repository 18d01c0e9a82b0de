"""Tiny diffusers components: real classes built offline, seeded, with a working byte-level BPE tokenizer."""

from __future__ import annotations

import torch

from ns_diffusion_methods.diffusion.tiny import (
    sd_scheduler_config,
    tiny_components,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
    write_tiny_tokenizer,
)


def test_tokenizer_reads_known_words_as_single_tokens_and_anything_else_bytewise(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    ids = tokenizer("remove degradation", padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True).input_ids
    assert len(ids) == 77
    assert tokenizer.convert_ids_to_tokens(ids[:4]) == ["<|startoftext|>", "remove</w>", "degradation</w>",
                                                       "<|endoftext|>"]
    # an unknown word with non-ASCII characters still tokenizes (no unknown token), one symbol per byte at most
    ids = tokenizer("héllo").input_ids
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert 1 <= len(ids) - 2 <= len("héllo".encode())
    # the files are a standard CLIP tokenizer folder
    assert {p.name for p in write_tiny_tokenizer(tmp_path / "tok2").iterdir()} >= {"vocab.json", "merges.txt"}


def test_components_match_and_run_end_to_end(tmp_path):
    parts = tiny_components(tmp_path, in_channels=9, hidden_size=16)
    tokens = parts["tokenizer"]("a photo", padding="max_length", max_length=77, return_tensors="pt").input_ids
    embeds = parts["text_encoder"](tokens)[0]
    assert embeds.shape == (1, 77, 16)
    latents = parts["vae"].encode(torch.rand(1, 3, 32, 32) * 2 - 1).latent_dist.mode()
    assert latents.shape == (1, 4, 4, 4)  # 4 levels: factor 8
    sample = torch.cat([latents, torch.rand(1, 5, 4, 4)], dim=1)  # inpainting: latent + mask + masked latent
    noise = parts["unet"](sample, torch.tensor([10]), encoder_hidden_states=embeds).sample
    assert noise.shape == (1, 4, 4, 4)
    assert torch.isfinite(parts["vae"].decode(noise).sample).all()
    alpha_bar = parts["scheduler"].alphas_cumprod[199].item()
    assert abs(alpha_bar - 0.75524) < 1e-4  # SD's scaled-linear schedule at t = 199
    assert parts["scheduler"].config.beta_schedule == sd_scheduler_config()["beta_schedule"]


def test_builders_are_seeded():
    first, second, other = tiny_unet(seed=3), tiny_unet(seed=3), tiny_unet(seed=4)
    for (name, a), (_, b), (_, c) in zip(first.named_parameters(), second.named_parameters(),
                                         other.named_parameters()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters()))
    assert torch.equal(next(tiny_vae(seed=1).parameters()), next(tiny_vae(seed=1).parameters()))
