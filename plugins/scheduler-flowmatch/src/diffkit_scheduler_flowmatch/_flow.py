"""Sigma maths of rectified-flow sampling: ``x_σ = (1-σ)·x0 + σ·ε`` with ``σ ∈ (0, 1]``, ``t = σ·T``.

Schedules are built in float64 from the default grid, or in float32 from custom sigmas or
timesteps, and handed to sampling as float32, which is where the reference computes each.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffkit import sigmas as K


def np_linspace(start: float, stop: float, num: int) -> torch.Tensor:
    """Evenly spaced float64 points with numpy's arithmetic, so that the grids agree to the bit."""
    if num == 1:
        return torch.tensor([start], dtype=torch.float64)
    # x_i = i·(b - a)/(n - 1) + a, the last point b exactly
    grid = torch.arange(num, dtype=torch.float64) * ((stop - start) / (num - 1)) + start
    grid[-1] = stop
    return grid


def training_sigmas(num_train_timesteps: int) -> torch.Tensor:
    # σ_i = (T - i)/T, float32
    return torch.arange(num_train_timesteps, 0, -1, dtype=torch.float32) / num_train_timesteps


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    # σ' = s·σ/(1 + (s-1)·σ)
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _odds(sigmas: torch.Tensor, power: float) -> torch.Tensor:
    # (1/σ - 1)^p
    odds = 1 / sigmas - 1
    return odds if power == 1.0 else odds**power


def exponential_time_shift(mu: float, sigmas: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    e = math.exp(mu)
    # σ' = e^μ/(e^μ + (1/σ - 1)^p)
    return torch.full_like(sigmas, e) / (e + _odds(sigmas, power))


def linear_time_shift(mu: float, sigmas: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    # σ' = μ/(μ + (1/σ - 1)^p)
    return torch.full_like(sigmas, mu) / (mu + _odds(sigmas, power))


def time_shift(kind: str, mu: float, sigmas: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """The resolution-dependent shift of ``use_dynamic_shifting``."""
    if kind == "exponential":
        return exponential_time_shift(mu, sigmas, power)
    if kind == "linear":
        return linear_time_shift(mu, sigmas, power)
    raise ValueError(f"time_shift_type {kind!r} is unknown; allowed values: exponential, linear")


def stretch_to_terminal(sigmas: torch.Tensor, terminal: float) -> torch.Tensor:
    """Rescale ``1 - σ`` so that the last sigma becomes ``terminal``."""
    one_minus = 1 - sigmas
    scale = one_minus[-1] / (1 - terminal)
    # σ' = 1 - (1 - σ)/((1 - σ_last)/(1 - terminal))
    return 1 - one_minus / scale


def dynamic_shift_mu(
    image_seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float
) -> float:
    """``μ`` for ``image_seq_len`` tokens, linear between ``(base_seq_len, base_shift)`` and ``(max_seq_len, max_shift)``."""
    if max_seq_len == base_seq_len:
        raise ValueError(f"max_image_seq_len and base_image_seq_len are both {base_seq_len}; mu needs two points")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    # μ = L·m + (shift_base - m·L_base)
    return image_seq_len * slope + (base_shift - slope * base_seq_len)


# -- schedule shapes -------------------------------------------------------------------------
def reshape_schedule(kind: str, sigmas: torch.Tensor, num: int) -> torch.Tensor:
    """Replace ``sigmas`` by a karras/exponential/beta schedule of ``num`` points between its ends (float64)."""
    return torch.from_numpy(K.sigma_schedule(kind, sigmas, num)).to(torch.float64)


# -- per-sample sigmas -----------------------------------------------------------------------
def first_match(values: list[float], value: float) -> int:
    """Where a run that counts its own steps starts at ``value``: the second match when repeated."""
    matches = [i for i, v in enumerate(values) if v == value]
    if not matches:
        raise ValueError(f"timestep {value!r} is not one of this run's timesteps")
    return matches[1] if len(matches) > 1 else matches[0]


def as_float32(value: Any) -> float:
    """A timestep as the float32 value the run's timesteps are compared in."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).item()
    return torch.tensor(float(value), dtype=torch.float32).item()


def check_not_integer(timestep: Any, owner: str) -> None:
    """Reject step indices passed where a timestep is wanted (``enumerate`` mistakes)."""
    integral = isinstance(timestep, int) or (
        isinstance(timestep, torch.Tensor) and not timestep.is_floating_point() and not timestep.is_complex()
    )
    if integral:
        raise ValueError(
            f"{owner}.step got an integer timestep ({timestep!r}); pass one of the run's timesteps "
            "(floats), not an index from enumerate(timesteps)"
        )
