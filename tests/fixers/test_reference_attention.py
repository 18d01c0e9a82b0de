"""The reference-view attention processor against attention computed by hand and diffusers' stock processor."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from ns_diffusion_methods.diffusion.tiny import tiny_unet
from ns_diffusion_methods.fixers.attention import (
    PerViewAttnProcessor,
    ReferenceViewAttnProcessor,
    install_reference_attention,
    self_attention_layers,
)


def _attention_layer(seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    layer = Attention(query_dim=12, heads=3, dim_head=4, bias=True)
    with torch.no_grad():  # non-trivial output projection bias
        layer.to_out[0].bias.normal_()
    return layer.eval()


def _by_hand(layer: Attention, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head over ``tokens`` [L, D] (explicit loops, no SDPA), then the projection."""
    heads, dim_head = layer.heads, layer.to_q.out_features // layer.heads
    query, key, value = layer.to_q(tokens), layer.to_k(tokens), layer.to_v(tokens)
    out = torch.empty_like(query)
    for h in range(heads):
        cols = slice(h * dim_head, (h + 1) * dim_head)
        scores = query[:, cols] @ key[:, cols].t() / dim_head ** 0.5
        out[:, cols] = torch.softmax(scores, dim=-1) @ value[:, cols]
    return layer.to_out[0](out)


@pytest.mark.parametrize("views", [2, 3])
def test_views_attend_jointly_like_attention_over_the_concatenated_tokens(views):
    layer = _attention_layer()
    processor = ReferenceViewAttnProcessor()
    layer.set_processor(processor)
    batch, tokens = 2, 5
    hidden = torch.randn(batch * views, tokens, 12)  # (b v) layout
    with torch.no_grad():
        mixed = layer(hidden, num_views=views)  # diffusers passes cross_attention_kwargs on to the processor
        expected = torch.cat([
            _by_hand(layer, hidden[b * views:(b + 1) * views].reshape(views * tokens, 12)).reshape(views, tokens, 12)
            for b in range(batch)])
    torch.testing.assert_close(mixed, expected, rtol=1e-5, atol=1e-5)


def test_one_view_equals_the_stock_processors():
    layer = _attention_layer(seed=1)
    hidden = torch.randn(4, 7, 12)
    with torch.no_grad():
        layer.set_processor(AttnProcessor2_0())
        stock_sdpa = layer(hidden)
        layer.set_processor(AttnProcessor())
        stock_classic = layer(hidden)
        layer.set_processor(ReferenceViewAttnProcessor())
        ours = layer(hidden)
    torch.testing.assert_close(ours, stock_sdpa, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours, stock_classic, rtol=1e-5, atol=1e-5)


@contextmanager
def diffusers_warnings():
    """The messages diffusers logs inside the block (its loggers do not propagate to pytest's caplog)."""
    records: list = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger("diffusers")
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def test_installed_on_self_attention_only_and_mixes_views_within_a_sample():
    unet = tiny_unet(seed=0).eval()
    stock = {name: type(p) for name, p in unet.attn_processors.items()}
    latents = torch.randn(4, 4, 8, 8)  # 2 samples x 2 views, (b v) layout
    embeds = torch.randn(4, 77, 16)
    timesteps = torch.full((4,), 199)

    def run(x: torch.Tensor, views: int) -> torch.Tensor:
        with torch.no_grad():
            return unet(x, timesteps, encoder_hidden_states=embeds, cross_attention_kwargs={"num_views": views}).sample

    with diffusers_warnings() as before:  # the stock processors do not expect num_views and say so on every call
        stock_output = run(latents, 1)
    assert any("num_views" in message for message in before)

    processor = install_reference_attention(unet)
    processors = unet.attn_processors
    assert len(self_attention_layers(unet)) == sum(name.endswith("attn1.processor") for name in processors) > 0
    for name, proc in processors.items():
        if name.endswith("attn1.processor"):
            assert proc is processor
        else:  # text cross-attention keeps diffusers' processor, wrapped to accept num_views
            assert isinstance(proc, PerViewAttnProcessor) and type(proc.processor) is stock[name]
    assert install_reference_attention(unet) is not processor  # installing again does not wrap twice
    assert all(not isinstance(p.processor, PerViewAttnProcessor) for p in unet.attn_processors.values()
               if isinstance(p, PerViewAttnProcessor))

    with diffusers_warnings() as after:
        base = run(latents, 2)
        independent = run(latents, 1)
    assert after == []
    torch.testing.assert_close(independent, stock_output, rtol=1e-5, atol=1e-5)  # V = 1: the stock UNet
    changed_reference = latents.clone()
    changed_reference[1] += 1.0  # sample 0's reference view
    moved = run(changed_reference, 2)
    assert not torch.allclose(moved[0], base[0], atol=1e-4)  # view 0 sees its reference
    torch.testing.assert_close(moved[2:], base[2:])  # the other sample does not
    # with V = 1 the entries are independent again
    torch.testing.assert_close(run(changed_reference, 1)[0], independent[0])


def test_bad_layouts_are_refused():
    layer = _attention_layer()
    layer.set_processor(ReferenceViewAttnProcessor())
    with pytest.raises(ValueError, match="cannot be split"):
        layer(torch.randn(3, 5, 12), num_views=2)
    with pytest.raises(ValueError, match="self-attention"):
        layer(torch.randn(2, 5, 12), encoder_hidden_states=torch.randn(2, 3, 12))
    with pytest.raises(ValueError, match="num_views"):
        layer(torch.randn(2, 5, 12), num_views=0)
