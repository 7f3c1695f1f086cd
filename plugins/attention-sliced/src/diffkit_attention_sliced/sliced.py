"""``SlicedBackend`` ("sliced"): attention computed a few heads at a time, to bound peak memory."""

from __future__ import annotations

import numbers
import threading
import warnings
from typing import Any

import torch

from diffkit.attention import AttentionBackend


class SlicedBackend(AttentionBackend):
    """Attention over ``slice_size`` rows of the flattened ``batch * heads`` axis at a time.

    The scores of one slice (``rows × query tokens × key tokens``) are the largest temporary,
    instead of those of every head of every image at once. ``slice_size`` has the meaning of
    diffusers' ``enable_attention_slicing``, where it counts heads:

    - ``"auto"``: half the layer's heads (at least one), so each image takes two slices;
    - ``"max"``: one head at a time, the least memory;
    - an int: that many heads per slice; in a layer with fewer heads it is clamped to that
      layer's heads, as diffusers' sliced processor does, with one warning per backend.

    Each slice is ``softmax(q kᵀ · scale + mask) v`` written out, so results equal SDPA's
    within float32 round-off. The instance keeps ``slice_size`` (and whether it has warned):
    one instance serves every layer and every thread.
    """

    name = "sliced"

    def __init__(self, slice_size: str | int = "auto") -> None:
        valid = slice_size in ("auto", "max") if isinstance(slice_size, str) else (
            isinstance(slice_size, numbers.Integral) and not isinstance(slice_size, bool) and slice_size >= 1
        )
        if not valid:
            raise ValueError(f"slice_size must be 'auto', 'max' or a positive int, got {slice_size!r}")
        self.slice_size: str | int = slice_size if isinstance(slice_size, str) else int(slice_size)
        self._warned = threading.Event()

    def options(self) -> dict[str, Any]:
        return {"slice_size": self.slice_size}

    def heads_per_slice(self, heads: int, where: str = "") -> int:
        """How many heads one slice covers in a layer with ``heads`` heads."""
        if self.slice_size == "auto":
            return max(1, heads // 2)
        if self.slice_size == "max":
            return 1
        assert isinstance(self.slice_size, int)
        if self.slice_size > heads:
            if not self._warned.is_set():
                self._warned.set()
                layer = f"attention layer {where!r}" if where else "an attention layer"
                warnings.warn(
                    f"slice_size={self.slice_size} is larger than the {heads} head(s) of {layer}: its slices "
                    f"take {heads} head(s) at a time (said once for this backend)",
                    UserWarning,
                    stacklevel=2,
                )
            return heads
        return self.slice_size

    def check_layer(self, layer: Any, where: str) -> None:
        heads = getattr(layer, "heads", None)
        if isinstance(heads, int):
            self.heads_per_slice(heads, where)

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor:
        batch, heads, q_len, dim = query.shape
        k_len, v_dim = key.shape[-2], value.shape[-1]
        step = self.heads_per_slice(heads)
        scale = dim**-0.5 if scale is None else scale
        rows = batch * heads
        q = query.reshape(rows, q_len, dim)
        k = key.reshape(rows, k_len, dim)
        v = value.reshape(rows, k_len, v_dim)
        mask = None if attn_mask is None else attn_mask.expand(batch, heads, q_len, k_len)
        out = torch.empty(rows, q_len, v_dim, dtype=query.dtype, device=query.device)
        for start in range(0, rows, step):
            stop = min(start + step, rows)
            if mask is None:
                bias, beta = q.new_zeros(1, 1, 1), 0.0
            else:
                index = torch.arange(start, stop, device=query.device)
                bias, beta = _additive(mask[index // heads, index % heads], query.dtype), 1.0
            scores = torch.baddbmm(bias, q[start:stop], k[start:stop].transpose(1, 2), beta=beta, alpha=scale)
            out[start:stop] = torch.bmm(scores.softmax(dim=-1), v[start:stop])
        return out.view(batch, heads, q_len, v_dim)


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (``True`` = attend, as in SDPA) as an additive one; others cast to ``dtype``."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    return mask.to(dtype)
