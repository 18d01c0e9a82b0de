"""Reference-view mixing for Difix: self-attention across the views of one sample, as a diffusers attention processor.

Difix with reference views (``nvidia/difix_ref``) runs the image to fix and its reference images through the UNet as one
batch laid out view-major per sample, ``(B*V, ...)``. In every transformer block the *self*-attention (``attn1``) lets
the tokens of all V views of a sample attend to each other::

    (B*V, N, D) -> (B, V*N, D) -> self-attention -> (B, V*N, D) -> (B*V, N, D)

Text cross-attention (``attn2``) and the feed-forward stay per view. No parameter is added: SD's own self-attention
weights are reused (Difix3D+, Wu et al., CVPR 2025, "reference mixing layer"; the official code patches diffusers'
``BasicTransformerBlock.forward`` globally with V = 2 hard-coded).

Here the same computation is an attention processor installed on the ``attn1`` modules of one UNet only
(:func:`install_reference_attention`). V travels with each call as ``cross_attention_kwargs={"num_views": V}``, which
diffusers hands to every attention layer of the UNet, so V = 1 (no reference) and any V >= 2 (one or several
references) share one model, and a block recomputed by gradient checkpointing during the backward pass sees the same V
as in the forward pass (the kwargs are arguments of the checkpointed call; no state outside the call is read). The
other attention layers (text cross-attention ``attn2``) get :class:`PerViewAttnProcessor`, which accepts ``num_views``
and runs their own processor unchanged (diffusers would otherwise log a warning about an unexpected kwarg on every
call). LayerNorm before ``attn1`` is per token and SD's UNet has no attention mask or positional embedding there, so
reshaping around ``attn1`` equals the patched block.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceViewAttnProcessor:
    """Self-attention over the concatenated tokens of the V views of each sample (SDPA).

    One instance is shared by all ``attn1`` layers of a UNet; the ``num_views`` entry of ``cross_attention_kwargs``
    (V, default 1) says how many consecutive batch entries form one sample. The processor holds no state. With V = 1 it
    computes exactly what diffusers' ``AttnProcessor2_0`` computes.
    """

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        num_views: int = 1,
    ) -> torch.Tensor:
        """``hidden_states`` [B*V, N, D] -> [B*V, N, D]: attention of each token over all V*N tokens of its sample;
        ``num_views`` = V, the batch laid out (b v), view 0 first."""
        views = int(num_views)
        if views < 1:
            raise ValueError(f"`num_views` must be >= 1, but got {num_views}.")
        if encoder_hidden_states is not None:
            raise ValueError("ReferenceViewAttnProcessor is for self-attention (attn1) only, but it was called with "
                             "`encoder_hidden_states`: install it with install_reference_attention().")
        if hidden_states.ndim != 3:
            raise ValueError(f"Expected hidden states [B*V, N, D], got shape {tuple(hidden_states.shape)}.")
        if attention_mask is not None and views > 1:
            raise ValueError("Reference-view attention does not support an attention mask.")
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        batch_views, tokens, channels = hidden_states.shape
        if batch_views % views != 0:
            raise ValueError(f"A batch of {batch_views} entries cannot be split into samples of {views} views.")
        batch = batch_views // views
        residual = hidden_states

        # [B*V, N, D] -> [B, V*N, D]: the views of one sample become one token sequence (layout (b v), view-major)
        hidden_states = hidden_states.reshape(batch, views * tokens, channels)
        if attention_mask is not None:  # V == 1 here, so the mask keeps its per-entry meaning
            attention_mask = attn.prepare_attention_mask(attention_mask, views * tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # [B, V*N, heads*hd] -> [B, heads, V*N, hd]
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                       is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, views * tokens, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)  # linear projection
        hidden_states = attn.to_out[1](hidden_states)  # dropout

        # [B, V*N, D] -> [B*V, N, D]
        hidden_states = hidden_states.reshape(batch_views, tokens, -1)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class PerViewAttnProcessor:
    """Wraps the processor of an attention layer that stays per view (text cross-attention ``attn2``): accepts the
    ``num_views`` kwarg meant for :class:`ReferenceViewAttnProcessor` and calls the wrapped processor without it.

    Args:
        processor: the layer's own processor (diffusers' ``AttnProcessor2_0`` for SD).
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        temb: Optional[torch.Tensor] = None,
        num_views: int = 1,
    ) -> torch.Tensor:
        """The wrapped processor's output; ``num_views`` is ignored (each view attends to the text on its own)."""
        kwargs = {} if temb is None else {"temb": temb}
        return self.processor(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **kwargs)


def _attention_layers(unet: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(name, module) of every diffusers ``Attention`` layer of ``unet``."""
    from diffusers.models.attention_processor import Attention

    return [(name, module) for name, module in unet.named_modules() if isinstance(module, Attention)]


def self_attention_layers(unet: nn.Module) -> List[nn.Module]:
    """The self-attention (``attn1``) modules of the transformer blocks of a diffusers UNet."""
    return [module for name, module in _attention_layers(unet)
            if name.endswith("attn1") and not module.is_cross_attention]


def install_reference_attention(unet: nn.Module) -> ReferenceViewAttnProcessor:
    """Install one shared :class:`ReferenceViewAttnProcessor` on every self-attention layer of ``unet``, and wrap the
    processor of every other attention layer in :class:`PerViewAttnProcessor`.

    No diffusers class is modified; only this UNet's processors change.

    Returns:
        The processor; call ``unet(..., cross_attention_kwargs={"num_views": V})`` for batches of V views per sample.
    """
    self_layers = self_attention_layers(unet)
    if not self_layers:
        raise ValueError(f"{type(unet).__name__} has no transformer self-attention (attn1) layer to mix views in.")
    processor = ReferenceViewAttnProcessor()
    mixing = {id(layer) for layer in self_layers}
    for _name, layer in _attention_layers(unet):
        if id(layer) in mixing:
            layer.set_processor(processor)
        elif not isinstance(layer.processor, PerViewAttnProcessor):
            layer.set_processor(PerViewAttnProcessor(layer.processor))
    return processor
