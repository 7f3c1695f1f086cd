"""``XFormersBackend`` ("xformers"): ``xformers.ops.memory_efficient_attention`` on CUDA tensors.

xformers is an optional extra (``pip install 'diffkit-attention-xformers[xformers]'``); without
it, or without CUDA, :meth:`XFormersBackend.is_available` says why and selecting the backend
raises that reason.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import torch

from diffkit.attention import AttentionBackend

INSTALL_HINT = "pip install 'diffkit-attention-xformers[xformers]'"


class XFormersBackend(AttentionBackend):
    """Memory-efficient attention from xformers; ``attention_op`` picks its kernel (``None``: automatic).

    Tensors arrive as ``(batch, heads, tokens, head_dim)`` and are handed to xformers as
    ``(batch, tokens, heads, head_dim)`` views, without copies; a mask becomes an additive
    bias whose rows are padded to a multiple of 8 elements, as xformers' kernels require.
    """

    name = "xformers"

    def __init__(self, attention_op: Any = None) -> None:
        self.attention_op = attention_op

    def options(self) -> dict[str, Any]:
        return {"attention_op": self.attention_op}

    def is_available(self, device: Any = None) -> tuple[bool, str]:
        """Needs xformers to import and, on ``device`` (``None``: this machine), CUDA."""
        ops, why = xformers_ops()
        if ops is None:
            return False, why
        if device is not None and torch.device(device).type != "cuda":
            return False, f"xformers runs on CUDA tensors only, and these are on {torch.device(device)}"
        if not torch.cuda.is_available():
            return False, "xformers needs CUDA, and torch.cuda.is_available() is False on this machine"
        return True, ""

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor:
        ok, why = self.is_available(query.device)
        if not ok:
            raise RuntimeError(f"attention backend 'xformers' is not available: {why}")
        ops, _ = xformers_ops()
        batch, heads, q_len, _ = query.shape
        k_len = key.shape[-2]
        bias = None if attn_mask is None else _padded_bias(attn_mask, (batch, heads, q_len, k_len), query.dtype)
        out = ops.memory_efficient_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
            attn_bias=bias, scale=scale, op=self.attention_op,
        )
        return out.transpose(1, 2)


@functools.cache
def xformers_ops() -> tuple[ModuleType | None, str]:
    """``(xformers.ops, "")``, or ``(None, why it cannot be used)``; imported once."""
    try:
        ops = importlib.import_module("xformers.ops")
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "xformers":
            return None, f"xformers is not installed ({INSTALL_HINT})"
        return None, f"xformers failed to import: {exc}"
    except Exception as exc:  # a wheel built for another torch raises all sorts of errors
        return None, f"xformers failed to import: {type(exc).__name__}: {exc}"
    if not hasattr(ops, "memory_efficient_attention"):
        return None, "the installed xformers has no xformers.ops.memory_efficient_attention"
    return ops, ""


def _padded_bias(mask: torch.Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype) -> torch.Tensor:
    """``mask`` (boolean, ``True`` = attend, or additive) as a ``shape`` additive bias with 8-aligned rows."""
    *lead, k_len = shape
    storage = torch.zeros(*lead, -(-k_len // 8) * 8, dtype=dtype, device=mask.device)
    bias = storage[..., :k_len]
    if mask.dtype == torch.bool:
        bias.masked_fill_(~mask.expand(shape), float("-inf"))
    else:
        bias.copy_(mask.expand(shape))
    return bias
