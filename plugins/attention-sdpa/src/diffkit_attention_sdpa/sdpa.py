"""The default attention backend: PyTorch's fused ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffkit.attention import AttentionBackend


class SDPABackend(AttentionBackend):
    """``softmax(q kᵀ · scale + mask) v`` through ``F.scaled_dot_product_attention``."""

    name = "sdpa"

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=0.0, scale=scale)
