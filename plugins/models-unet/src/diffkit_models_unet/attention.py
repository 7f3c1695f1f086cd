"""``SpatialSelfAttention``: multi-head self-attention over the pixels of a feature map."""

from __future__ import annotations

import torch
from torch import nn

from .cross_attention import CrossAttention


class SpatialSelfAttention(CrossAttention):
    """Self-attention across the ``height * width`` positions of a ``(batch, channels, h, w)`` map.

    Optional GroupNorm first, then :class:`CrossAttention`'s projections (with biases here) into
    ``channels // head_dim`` heads and its product by the attention backend, the residual and a
    division by ``rescale_output_factor``. Parameter names are those of diffusers' ``Attention``
    so checkpoints load unchanged.

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
        super().__init__(channels, channels // head_dim, head_dim, bias=True)
        self.rescale_output_factor = rescale_output_factor
        self.spatial_norm = spatial_norm
        self.group_norm = (
            nn.GroupNorm(norm_num_groups, channels, eps=eps, affine=True) if norm_num_groups is not None else None
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        batch, channels, height, width = x.shape
        normed = x if self.spatial_norm is None else self.spatial_norm(x, cond)
        tokens = normed.reshape(batch, channels, height * width)
        if self.group_norm is not None:
            tokens = self.group_norm(tokens)
        out = self.attend(tokens.transpose(1, 2))
        out = out.transpose(1, 2).reshape(batch, channels, height, width)
        return (out + x) / self.rescale_output_factor
