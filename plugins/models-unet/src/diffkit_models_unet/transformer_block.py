"""``BasicTransformerBlock``: self-attention, cross-attention and a GEGLU feed-forward, each
pre-normalised and residual, over the pixel tokens of a UNet feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cross_attention import CrossAttention

#: width of the feed-forward's hidden layer, in multiples of the token width
FEED_FORWARD_MULT = 4


class GEGLU(nn.Module):
    """``a * gelu(b)`` where ``[a, b]`` is one linear projection split in two halves."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to ``4 * dim``, dropout, linear back to ``dim`` (``net.0``, ``net.1``, ``net.2``)."""

    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * FEED_FORWARD_MULT
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """``x + attn1(norm1(x))``, then ``x + attn2(norm2(x), context)``, then ``x + ff(norm3(x))``.

    ``attn1`` attends over the tokens themselves, or over the context when
    ``only_cross_attention``; ``attn2`` exists when ``context_dim`` is given.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        *,
        context_dim: int | None,
        only_cross_attention: bool = False,
        upcast_attention: bool = False,
        dropout: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.only_cross_attention = only_cross_attention
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn1 = CrossAttention(
            dim,
            heads,
            head_dim,
            context_dim=context_dim if only_cross_attention else None,
            upcast_attention=upcast_attention,
            dropout=dropout,
        )
        if context_dim is not None:
            self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim, eps=norm_eps)
            self.attn2: CrossAttention | None = CrossAttention(
                dim, heads, head_dim, context_dim=context_dim, upcast_attention=upcast_attention, dropout=dropout
            )
        else:
            self.norm2 = None
            self.attn2 = None
        self.norm3 = nn.LayerNorm(dim, eps=norm_eps)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        self_bias: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``self_bias`` masks ``attn1``'s keys, ``context_bias`` masks ``attn2``'s (additive)."""
        x = x + self.attn1(self.norm1(x), context if self.only_cross_attention else None, self_bias)
        if self.attn2 is not None:
            assert self.norm2 is not None
            x = x + self.attn2(self.norm2(x), context, context_bias)
        return x + self.ff(self.norm3(x))
