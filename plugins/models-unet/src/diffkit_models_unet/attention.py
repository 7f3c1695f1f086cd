"""``SpatialSelfAttention``: multi-head self-attention over the pixels of a feature map."""

from __future__ import annotations

import torch
from torch import nn

from diffkit.attention import AttentionBackend, default_backend


class SpatialSelfAttention(nn.Module):
    """Self-attention across the ``height * width`` positions of a ``(batch, channels, h, w)`` map.

    Optional GroupNorm first, then ``to_q``/``to_k``/``to_v`` projections into
    ``channels // head_dim`` heads, the product by :attr:`attention_backend`, the ``to_out``
    projection, the residual and a division by ``rescale_output_factor``. Parameter names
    are those of diffusers' ``Attention`` so checkpoints load unchanged.

    ``spatial_norm``, when given, is a conditioned norm ``spatial_norm(x, cond)`` applied to the
    input first (the MoVQ decoder's ``SpatialNorm``); ``forward`` then needs ``cond``.
    """

    def __init__(
        self,
        channels: int,
        head_dim: int,
        *,
        norm_num_groups: int | None,
        eps: float = 1e-5,
        rescale_output_factor: float = 1.0,
        spatial_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.heads = channels // head_dim
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.rescale_output_factor = rescale_output_factor
        self.spatial_norm = spatial_norm
        inner = self.heads * head_dim

        self.group_norm = (
            nn.GroupNorm(norm_num_groups, channels, eps=eps, affine=True) if norm_num_groups is not None else None
        )
        self.to_q = nn.Linear(channels, inner)
        self.to_k = nn.Linear(channels, inner)
        self.to_v = nn.Linear(channels, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels), nn.Dropout(0.0)])
        self.attention_backend: AttentionBackend = default_backend()

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        normed = x if self.spatial_norm is None else self.spatial_norm(x, cond)
        tokens = normed.reshape(batch, channels, height * width)
        if self.group_norm is not None:
            tokens = self.group_norm(tokens)
        tokens = tokens.transpose(1, 2)

        query = self._split_heads(self.to_q(tokens))
        key = self._split_heads(self.to_k(tokens))
        value = self._split_heads(self.to_v(tokens))
        out = self.attention_backend(query, key, value, attn_mask=None, scale=self.scale)

        out = out.transpose(1, 2).reshape(batch, height * width, self.heads * self.head_dim).to(query.dtype)
        out = self.to_out[1](self.to_out[0](out))
        out = out.transpose(1, 2).reshape(batch, channels, height, width)
        return (out + x) / self.rescale_output_factor
