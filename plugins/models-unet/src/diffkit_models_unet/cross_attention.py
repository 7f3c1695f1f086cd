"""``CrossAttention``: multi-head attention of a token sequence over itself or over a context."""

from __future__ import annotations

import torch
from torch import nn

from diffkit.attention import AttentionBackend, default_backend


class CrossAttention(nn.Module):
    """Attention of ``(batch, tokens, query_dim)`` queries over a context of
    ``(batch, context_tokens, context_dim)`` (cross-attention) or over the queries themselves
    (self-attention, when ``context_dim`` is ``None`` or no context is passed).

    ``to_q``/``to_k``/``to_v`` project without bias into ``heads`` heads of ``head_dim``;
    :attr:`attention_backend` computes the product; ``to_out`` projects back. Parameter names
    are those of diffusers' ``Attention`` so checkpoints load unchanged.

    ``context_norm`` layer-normalises the context first (``norm_cross``, the K-diffusion blocks).
    ``upcast_attention`` is kept as diffusers' configs carry it; as in diffusers' default
    (fused SDPA) path it changes nothing: fused kernels accumulate in float32 already.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        *,
        context_dim: int | None = None,
        upcast_attention: bool = False,
        bias: bool = False,
        dropout: float = 0.0,
        context_norm: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.upcast_attention = upcast_attention
        inner = heads * head_dim
        source_dim = query_dim if context_dim is None else context_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(source_dim, inner, bias=bias)
        self.to_v = nn.Linear(source_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(dropout)])
        self.norm_cross = nn.LayerNorm(source_dim) if context_norm else None
        self._self_attention = context_dim is None
        self.attention_backend: AttentionBackend = default_backend()

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.attend(x, context, bias)

    # -- fused projections ----------------------------------------------------------------
    @property
    def is_self_attention(self) -> bool:
        """Whether keys and values come from the queries' own tokens (no ``context_dim``)."""
        return self._self_attention

    @property
    def fused_projections(self) -> bool:
        """Whether :meth:`fuse_projections` is in effect."""
        return "fused_weight" in self._buffers

    def fuse_projections(self) -> None:
        """One matmul for q, k and v (self-attention) or for k and v (cross-attention).

        The concatenated weights are non-persistent buffers: the state dict keeps ``to_q``,
        ``to_k`` and ``to_v`` as they are, and :meth:`unfuse_projections` removes the buffers.
        """
        if self.fused_projections:
            return
        parts = [self.to_q, self.to_k, self.to_v] if self.is_self_attention else [self.to_k, self.to_v]
        weight = torch.cat([p.weight.detach() for p in parts])
        bias = None if parts[0].bias is None else torch.cat([p.bias.detach() for p in parts])  # type: ignore[union-attr]
        self.register_buffer("fused_weight", weight, persistent=False)
        self.register_buffer("fused_bias", bias, persistent=False)

    def unfuse_projections(self) -> None:
        """Drop the fused weights; the layer is again exactly as built or loaded."""
        if self.fused_projections:
            del self.fused_weight
            del self.fused_bias

    def _project(self, x: torch.Tensor, source: torch.Tensor, self_attending: bool) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values, through the fused weights where they apply."""
        if self.fused_projections:
            if self.is_self_attention and self_attending:
                return torch.nn.functional.linear(x, self.fused_weight, self.fused_bias).chunk(3, dim=-1)
            if not self.is_self_attention:
                key, value = torch.nn.functional.linear(source, self.fused_weight, self.fused_bias).chunk(2, dim=-1)
                return self.to_q(x), key, value
        return self.to_q(x), self.to_k(source), self.to_v(source)

    def attend(
        self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (``x`` itself when ``None``).

        ``bias``: an additive ``(batch, 1, key_tokens)`` mask (0 to keep, a large negative value
        to drop), the same for every head and query.
        """
        if context is None:
            source = x
        else:
            source = context if self.norm_cross is None else self.norm_cross(context)
        batch, tokens, _ = x.shape
        query, key, value = (self._split_heads(t) for t in self._project(x, source, context is None))
        mask = None if bias is None else _head_broadcast_bias(bias, batch, key.shape[2])
        out = self.attention_backend(query, key, value, attn_mask=mask, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, self.heads * self.head_dim).to(query.dtype)
        return self.to_out[1](self.to_out[0](out))


def _head_broadcast_bias(bias: torch.Tensor, batch: int, key_tokens: int) -> torch.Tensor:
    """``(batch, 1, key_tokens)`` bias as ``(batch, 1, 1, key_tokens)``, checked against the keys."""
    if bias.ndim != 3 or bias.shape[1] != 1 or bias.shape[0] not in (1, batch):
        raise ValueError(
            f"attention mask bias must have shape ({batch}, 1, {key_tokens}), got {tuple(bias.shape)}"
        )
    if bias.shape[-1] != key_tokens:
        raise ValueError(
            f"attention mask covers {bias.shape[-1]} tokens but this attention layer attends over {key_tokens}; "
            "attention_mask applies to the self-attention (pixels) unless the model uses only_cross_attention, "
            "encoder_attention_mask to the encoder_hidden_states tokens"
        )
    return bias[:, :, None, :]
