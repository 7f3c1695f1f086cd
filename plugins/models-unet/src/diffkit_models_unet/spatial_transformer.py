"""``SpatialTransformer``: transformer blocks over the pixels of a feature map, conditioned on
a token context (diffusers' ``Transformer2DModel`` with continuous input)."""

from __future__ import annotations

import torch
from torch import nn

from .transformer_block import BasicTransformerBlock

#: epsilon of the GroupNorm in front of the transformer, fixed by the architecture
SPATIAL_NORM_EPS = 1e-6


class SpatialTransformer(nn.Module):
    """GroupNorm, ``proj_in`` (1x1 conv, or linear on tokens with ``linear_projection``), a
    stack of :class:`BasicTransformerBlock`, ``proj_out`` and the residual.

    Maps ``(batch, channels, h, w)`` to the same shape; the inner width is ``heads * head_dim``.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        head_dim: int,
        *,
        num_layers: int,
        context_dim: int | None,
        norm_num_groups: int,
        linear_projection: bool = False,
        only_cross_attention: bool = False,
        upcast_attention: bool = False,
    ) -> None:
        super().__init__()
        self.linear_projection = linear_projection
        inner = heads * head_dim
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=SPATIAL_NORM_EPS, affine=True)
        if linear_projection:
            self.proj_in: nn.Module = nn.Linear(channels, inner)
            self.proj_out: nn.Module = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
            self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner,
                heads,
                head_dim,
                context_dim=context_dim,
                only_cross_attention=only_cross_attention,
                upcast_attention=upcast_attention,
            )
            for _ in range(num_layers)
        )

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        self_bias: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.norm(x)
        if self.linear_projection:
            tokens = self.proj_in(_to_tokens(h))
        else:
            tokens = _to_tokens(self.proj_in(h))
        for block in self.transformer_blocks:
            tokens = block(tokens, context, self_bias, context_bias)
        if self.linear_projection:
            out = _to_map(self.proj_out(tokens), height, width)
        else:
            out = self.proj_out(_to_map(tokens, height, width))
        return out + x


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(batch, c, h, w)`` -> ``(batch, h * w, c)``."""
    batch, channels, height, width = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


def _to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(batch, h * w, c)`` -> ``(batch, c, h, w)``, contiguous."""
    batch, _, channels = tokens.shape
    return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2).contiguous()
