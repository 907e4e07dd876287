"""Cross-attention processors with explicit attention probabilities, to read or edit them (diffusers UNets).

:func:`explicit_attention` is diffusers' attention with the probabilities computed as a tensor and passed
through an ``edit(probs, batch)`` hook; :func:`on_cross_attention` puts one processor on every cross-attention
layer (``attn2``) of a UNet and restores the original processors afterwards. Two processors use them: the
mask's capture (:mod:`featscope.investigate.masks`) and prompt-to-prompt's re-injection,
:class:`CrossAttentionReplace`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

from featscope.errors import FeatscopeError

Edit = Callable[[torch.Tensor, int], torch.Tensor]  # (probs (B * heads, N, L), B) -> probs


def explicit_attention(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                       *, edit: Edit | None = None) -> torch.Tensor:  # fmt: skip
    """diffusers' attention (``AttnProcessor``) with softmax(QK^T) as a tensor, passed through ``edit``."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    image_input = hidden_states.ndim == 4
    if image_input:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    batch, length = context.shape[0], context.shape[1]
    attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(context))
    value = attn.head_to_batch_dim(attn.to_v(context))
    probs = attn.get_attention_scores(query, key, attention_mask)  # (B * heads, N, L)
    if edit is not None:
        probs = edit(probs, batch)
    out = attn.batch_to_head_dim(torch.bmm(probs, value))
    out = attn.to_out[1](attn.to_out[0](out))
    if image_input:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


@contextmanager
def on_cross_attention(unet: torch.nn.Module, processor=None, *, by_layer: Callable | None = None) -> Iterator[None]:
    """Use ``processor`` (or ``by_layer(name)``, one per layer) on every ``attn2`` (cross-attention) layer of
    ``unet``; restore the processors after."""
    original = unet.attn_processors
    names = [n for n in original if n.endswith("attn2.processor")]
    if not names:
        raise FeatscopeError("the backbone's UNet has no cross-attention layers (it is not prompt-conditioned)")
    chosen = {n: by_layer(n) if by_layer is not None else processor for n in names}
    unet.set_attn_processor({n: chosen.get(n, p) for n, p in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)


class CrossAttentionReplace:
    """Prompt-to-prompt's re-injection: the UNet runs ``streams`` prompts at once (the source first, then the
    edited ones; with CFG the batch is [unconditional streams, conditional streams]); while ``step`` is below
    ``until[k]``, edited stream k's conditional cross-attention probabilities are replaced by the source's,
    mapped to its tokens by ``mapper`` (L_source, L_edited): ``probs_k = probs_source @ mapper``.

    ``replaced`` counts the replacements made (one per layer call and stream), for checks."""

    def __init__(self, streams: int, until: Sequence[int], mapper: torch.Tensor) -> None:
        if len(until) != streams - 1:
            raise FeatscopeError(f"{len(until)} injection lengths for {streams - 1} edited prompts")
        self.streams = streams
        self.until = list(until)
        self.mapper = mapper
        self.step = 0
        self.replaced = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, edit=self.edit)

    def edit(self, probs: torch.Tensor, batch: int) -> torch.Tensor:
        """Replace the injected streams' conditional probabilities (B * heads, N, L) by the mapped source's."""
        rows = [k for k, until in enumerate(self.until) if self.step < until]
        if not rows:
            return probs
        if batch not in (self.streams, 2 * self.streams):
            raise FeatscopeError(f"a batch of {batch} for {self.streams} prompt streams")
        cond = batch - self.streams  # the conditional half starts here (0 without CFG)
        p = probs.view(batch, -1, *probs.shape[1:]).clone()
        source = p[cond] @ self.mapper.to(p)
        for k in rows:
            p[cond + 1 + k] = source
        self.replaced += len(rows)
        return p.view_as(probs)
