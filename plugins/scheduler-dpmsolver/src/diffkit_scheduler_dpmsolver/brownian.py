"""``BrownianTreeNoise``: reproducible Brownian increments over σ (k-diffusion's Brownian-tree sampler).

Noise drawn for ``[σ_a, σ_b]`` is the increment of one Brownian path fixed by a seed, so a finer
or coarser step schedule sees consistent noise. The tree itself is ``torchsde.BrownianInterval``.
"""

from __future__ import annotations

import numpy as np
import torch


class BrownianTreeNoise:
    """Normalised Brownian increments ``(W(b) - W(a))/√|b-a|`` on ``[sigma_min, sigma_max]``, one tree per seed.

    ``seed`` is an int (one tree for the whole batch), a list with one int per batch item, or
    ``None`` (a seed drawn from torch's global generator).
    """

    def __init__(self, like: torch.Tensor, sigma_min: float, sigma_max: float, seed: int | list[int] | None = None) -> None:
        try:
            import torchsde
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ImportError("DPMSolverSDEScheduler needs torchsde: pip install torchsde") from exc
        lo, hi = float(torch.as_tensor(sigma_min)), float(torch.as_tensor(sigma_max))
        self._sign = 1.0 if lo < hi else -1.0
        lo, hi = min(lo, hi), max(lo, hi)
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, []).item())
        self._batched = isinstance(seed, (list, tuple)) and len(seed) == like.shape[0]
        seeds = list(seed) if self._batched else [seed]  # type: ignore[arg-type]
        shape = like.shape[1:] if self._batched else like.shape
        self._trees = [
            torchsde.BrownianInterval(
                t0=lo, t1=hi, size=shape, dtype=like.dtype, device=like.device, entropy=s, tol=1e-6,
                pool_size=24, halfway_tree=True,
            )
            for s in seeds
        ]

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        a, b, sign = (sigma, sigma_next, 1.0) if sigma < sigma_next else (sigma_next, sigma, -1.0)
        w = torch.stack([tree(a, b) for tree in self._trees]) * (self._sign * sign)
        w = w if self._batched else w[0]
        # z = (W(b) - W(a))/√|b - a|
        return w / float(np.sqrt(np.abs(np.float32(sigma_next) - np.float32(sigma))))
