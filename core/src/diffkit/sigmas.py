"""Noise levels of the k-diffusion (sigma-space) schedulers: Euler, Heun, LMS, DPM-2, DPM-Solver, UniPC, ...

Notation: ``T`` training timesteps, ``N`` inference steps, ``ᾱ_t`` ``alphas_cumprod``, and the
variance-exploding view ``x = x0 + σ·ε`` of the VP process, with ``σ_t = √((1-ᾱ_t)/ᾱ_t)``. The
*table* is ``σ_t`` for every training timestep ``t = 0 … T-1`` (ascending in ``t``).

A sampling plan is computed once per run, so these functions favour exactness over speed: they
use numpy (and torch where the reference does) in the reference's dtypes — float32 tables, float64
interpolation — so that planned timesteps and sigmas agree to the bit. Schedulers then read the
plan as Python floats in ``step``.

Owned by the Euler-family plugin; other families import from here and append new functions at the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from . import schedules as S

SigmaSchedule = Literal["karras", "exponential", "beta"]
FinalSigmasType = Literal["zero", "sigma_min"]

SIGMA_SCHEDULES: tuple[str, ...] = SigmaSchedule.__args__
FINAL_SIGMAS_TYPES: tuple[str, ...] = FinalSigmasType.__args__

#: ``ᾱ`` given to the last training timestep after zero-terminal-SNR rescaling, so that ``σ_max`` stays finite
ZERO_SNR_ALPHA_BAR = 2.0**-24

#: the smallest σ whose logarithm :func:`sigma_to_t` takes (σ = 0 maps to t = 0)
MIN_LOG_SIGMA = 1e-10

#: Karras et al.'s ρ
KARRAS_RHO = 7.0


# -- tables ----------------------------------------------------------------------------------
def patch_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """A copy with ``ᾱ_{T-1} = 2⁻²⁴``: after zero-SNR rescaling ``ᾱ_{T-1} = 0`` and ``σ_{T-1}`` is infinite."""
    patched = alphas_cumprod.clone()
    patched[-1] = ZERO_SNR_ALPHA_BAR
    return patched


def sigma_table(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``σ_t`` for every training timestep, float32, ascending in ``t``."""
    # σ_t = √((1-ᾱ_t)/ᾱ_t)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def log_sigma_table(table: torch.Tensor | np.ndarray) -> np.ndarray:
    """``ln σ_t`` in float32, the grid :func:`sigma_to_t` interpolates on."""
    return np.log(np.asarray(table, dtype=np.float32))


def sigmas_at(timesteps: np.ndarray | Sequence[float], table: torch.Tensor | np.ndarray) -> np.ndarray:
    """σ at (possibly fractional) timesteps, piecewise linear in ``t``; float64, clamped at the table's ends."""
    values = np.asarray(table)
    # σ(t) = σ_⌊t⌋ + (t - ⌊t⌋)·(σ_⌊t⌋₊₁ - σ_⌊t⌋)
    return np.interp(np.asarray(timesteps), np.arange(len(values)), values)


def sigma_to_t(sigmas: np.ndarray | float, log_sigmas: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Fractional timesteps whose σ are ``sigmas``: linear interpolation in ``ln σ``, clamped to ``[0, T-1]``.

    ``log_sigmas`` is :func:`log_sigma_table`. The logarithms and weights are computed in the
    dtype of ``sigmas`` (float64 for Karras-style schedules, float32 for custom ones); ``dtype``
    is the dtype of the final blend of the two neighbouring indices: float64 on the reference's
    numpy path, float32 where the reference blends torch tensors (DPM-2's midpoints).
    """
    s = np.asarray(sigmas)
    shape = s.shape
    if s.size == 0:
        return np.zeros(shape, dtype=dtype)
    log_s = np.log(np.maximum(s.reshape(-1), MIN_LOG_SIGMA))
    n = log_sigmas.shape[0]
    # lo = the last i with ln σ_i ≤ ln σ (0 when there is none), at most T-2
    below = log_s[None, :] >= log_sigmas[:, None]
    last_below = n - 1 - np.argmax(below[::-1], axis=0)
    lo = np.where(below.any(axis=0), last_below, 0).clip(max=n - 2)
    low, high = log_sigmas[lo], log_sigmas[lo + 1]
    # w = (ln σ_lo - ln σ)/(ln σ_lo - ln σ_lo+1), clamped to [0, 1]
    w = np.clip((low - log_s) / (low - high), 0, 1)
    if np.dtype(dtype) == np.float32:
        w = w.astype(np.float32)
    # t = (1-w)·lo + w·(lo+1)
    t = (1 - w) * lo.astype(dtype) + w * (lo + 1).astype(dtype)
    return t.reshape(shape)


# -- sigma schedules -------------------------------------------------------------------------
def sigma_bounds(
    in_sigmas: np.ndarray | torch.Tensor, sigma_min: float | None = None, sigma_max: float | None = None
) -> tuple[float, float]:
    """``(σ_min, σ_max)``: the configured values where given, else the last and first of ``in_sigmas``."""
    lo = sigma_min if sigma_min is not None else float(in_sigmas[-1])
    hi = sigma_max if sigma_max is not None else float(in_sigmas[0])
    return lo, hi


def karras_sigmas(sigma_min: float, sigma_max: float, num_steps: int, rho: float = KARRAS_RHO) -> np.ndarray:
    """Karras et al. (2022) eq. 5: ``N`` descending sigmas, float64."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    ramp = np.linspace(0, 1, num_steps)
    # σ_i = (σ_max^(1/ρ) + i/(N-1)·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, num_steps: int) -> np.ndarray:
    """``N`` sigmas evenly spaced in ``ln σ`` from ``σ_max`` down to ``σ_min``, float64."""
    # σ_i = exp(ln σ_max + i/(N-1)·(ln σ_min - ln σ_max))
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), num_steps))


def beta_sigmas(
    sigma_min: float, sigma_max: float, num_steps: int, alpha: float = 0.6, beta: float = 0.6
) -> np.ndarray:
    """Lee et al. (2024), "Beta sampling is all you need": Beta(α, β) quantiles spread over ``[σ_min, σ_max]``.

    Needs scipy.
    """
    try:
        from scipy import stats
    except ImportError as exc:  # pragma: no cover - scipy is a declared dependency of the users
        raise ImportError("use_beta_sigmas needs scipy: pip install scipy") from exc
    # σ_i = σ_min + F⁻¹(1 - i/(N-1); α, β)·(σ_max - σ_min)
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, num_steps), alpha, beta)
    return sigma_min + quantiles * (sigma_max - sigma_min)


def sigma_schedule(
    kind: str,
    in_sigmas: np.ndarray | torch.Tensor,
    num_steps: int,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> np.ndarray:
    """``N`` sigmas of schedule ``kind`` between the bounds of :func:`sigma_bounds`."""
    lo, hi = sigma_bounds(in_sigmas, sigma_min, sigma_max)
    if kind == "karras":
        return karras_sigmas(lo, hi, num_steps)
    if kind == "exponential":
        return exponential_sigmas(lo, hi, num_steps)
    if kind == "beta":
        return beta_sigmas(lo, hi, num_steps)
    raise ValueError(f"sigma schedule {kind!r} is unknown; allowed values: {', '.join(SIGMA_SCHEDULES)}")


def chosen_sigma_schedule(
    use_karras_sigmas: bool | None, use_exponential_sigmas: bool | None, use_beta_sigmas: bool | None
) -> str | None:
    """The schedule the three config flags select, ``None`` for none; ``ValueError`` when several are set."""
    chosen = [
        kind
        for kind, flag in zip(
            SIGMA_SCHEDULES, (use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas), strict=True
        )
        if flag
    ]
    if len(chosen) > 1:
        raise ValueError(
            "use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas are exclusive; "
            f"got {', '.join(f'use_{k}_sigmas=True' for k in chosen)}"
        )
    return chosen[0] if chosen else None


def log_linear_sigmas(table: torch.Tensor | np.ndarray, num_points: int) -> np.ndarray:
    """``num_points`` sigmas evenly spaced in ``ln σ`` from the table's largest to its smallest, float32."""
    values = np.asarray(table, dtype=np.float32)
    # σ_i = exp(ln σ_{T-1} + i/(n-1)·(ln σ_0 - ln σ_{T-1})), in float32 as torch.linspace computes it
    grid = torch.linspace(float(np.log(values[-1])), float(np.log(values[0])), num_points, dtype=torch.float32)
    return grid.exp().numpy()


def final_sigma(alphas_cumprod: torch.Tensor, final_sigmas_type: str) -> float:
    """The σ a run ends on: 0 (``"zero"``) or σ at ``t = 0`` (``"sigma_min"``)."""
    if final_sigmas_type == "zero":
        return 0.0
    if final_sigmas_type == "sigma_min":
        # σ_0 = √((1-ᾱ_0)/ᾱ_0)
        return float(sigma_table(alphas_cumprod[:1])[0])
    raise ValueError(
        f"final_sigmas_type {final_sigmas_type!r} is unknown; allowed values: {', '.join(FINAL_SIGMAS_TYPES)}"
    )


def with_final_sigma(sigmas: np.ndarray, last: float) -> np.ndarray:
    """``sigmas`` followed by ``last``, as float32."""
    return np.append(np.asarray(sigmas, dtype=np.float64), last).astype(np.float32)


# -- timesteps -------------------------------------------------------------------------------
def float_timesteps(spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0) -> np.ndarray:
    """Descending float32 timesteps of the sigma-space schedulers.

    ``linspace`` keeps fractional values; ``leading`` (plus ``steps_offset``) and ``trailing``
    are integer-valued, ``trailing`` always with ``N`` values. Timesteps past ``T-1`` (``leading``
    with an offset) are allowed: :func:`sigmas_at` clamps them to σ_max.
    """
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_steps}")
    if spacing == "linspace":
        # t_i = (N-1-i)·(T-1)/(N-1)
        return np.linspace(0, num_train_timesteps - 1, num_steps, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        return S.leading_timesteps(num_train_timesteps, num_steps, steps_offset).numpy().astype(np.float32)
    if spacing == "trailing":
        return S.trailing_timesteps(num_train_timesteps, num_steps).numpy().astype(np.float32)
    raise ValueError(f"timestep_spacing {spacing!r} is unknown; allowed values: {', '.join(S.SPACINGS)}")
