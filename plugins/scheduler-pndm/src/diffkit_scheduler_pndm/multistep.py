"""The linear multistep (Adams–Bashforth) combination shared by PNDM's PLMS phase and IPNDM."""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: how many past derivative estimates the highest-order combination uses
MAX_HISTORY = 4


def adams_bashforth(history: Sequence[torch.Tensor]) -> torch.Tensor:
    """Combine the newest (last) 1–4 derivative estimates with the Adams–Bashforth weights.

    Each branch rounds like the reference: products first, then sums in order, then the
    final scaling (a division for orders 2–3, a multiplication by 1/24 for order 4).
    """
    order = len(history)
    if order == 0:
        raise ValueError("adams_bashforth needs at least one derivative estimate")
    if order == 1:
        return history[-1]
    if order == 2:
        # e = (3e₀ - e₁)/2
        return torch.mul(history[-1], 3).sub_(history[-2]).div_(2)
    if order == 3:
        # e = (23e₀ - 16e₁ + 5e₂)/12
        return torch.mul(history[-1], 23).sub_(torch.mul(history[-2], 16)).add_(torch.mul(history[-3], 5)).div_(12)
    # e = (55e₀ - 59e₁ + 37e₂ - 9e₃)/24
    combined = torch.mul(history[-1], 55).sub_(torch.mul(history[-2], 59))
    return combined.add_(torch.mul(history[-3], 37)).sub_(torch.mul(history[-4], 9)).mul_(1 / 24)
