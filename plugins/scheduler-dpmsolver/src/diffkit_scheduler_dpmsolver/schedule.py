"""Sampling plans of the exponential-integrator solvers (DPM-Solver, DEIS, UniPC).

These solvers step in the half-log-SNR ``λ = ln(α/σ)`` of the VP process ``x = α·x0 + σ·ε``. A plan
is ``N`` integer timesteps and ``N+1`` k-diffusion sigmas ``σ_k = σ/α`` (the last one where the run
ends). Everything here runs once per plan in the reference's dtypes (numpy float64 spacing, float32
tables) so that timesteps and sigmas agree with diffusers to the bit; the generic k-diffusion
pieces (σ tables, Karras/exponential/beta schedules, σ→t) come from :mod:`diffkit.sigmas`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffkit import schedules as S
from diffkit import sigmas as K


def vp_tables(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    trained_betas: tuple[float, ...] | None,
    rescale_betas_zero_snr: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(betas, alphas_cumprod)`` in float32; zero-SNR rescaling keeps ``ᾱ_{T-1} = 2⁻²⁴`` so σ stays finite."""
    betas = S.make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end, trained_betas)
    if rescale_betas_zero_snr:
        betas = S.rescale_zero_terminal_snr(betas)
    alphas_cumprod = S.alphas_cumprod(betas)
    if rescale_betas_zero_snr:
        alphas_cumprod = K.patch_zero_terminal_snr(alphas_cumprod)
    return betas, alphas_cumprod


def lambda_table(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    # λ_t = ln √ᾱ_t - ln √(1-ᾱ_t), float32
    return torch.log(torch.sqrt(alphas_cumprod)) - torch.log(torch.sqrt(1 - alphas_cumprod))


def clipped_timesteps(lambdas: torch.Tensor, lambda_min_clipped: float) -> int:
    """How many of the noisiest training timesteps ``λ_t < lambda_min_clipped`` excludes."""
    return int(torch.searchsorted(torch.flip(lambdas, [0]), lambda_min_clipped))


def solver_timesteps(
    spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0, last_timestep: int | None = None
) -> np.ndarray:
    """Descending int64 timesteps on ``N+1`` points with the last dropped, below ``last_timestep`` (default ``T``).

    ``trailing`` keeps the reference's float ``arange``, which for some ``N`` yields one more point
    (ending on timestep ``-1``).
    """
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_steps}")
    last = num_train_timesteps if last_timestep is None else last_timestep
    if spacing == "linspace":
        # t_i = round((N-i)·(last-1)/N), i = 0 … N-1
        return np.linspace(0, last - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        ratio = last // (num_steps + 1)
        # t_i = (N-i)·⌊last/(N+1)⌋ + offset
        return (np.arange(0, num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + steps_offset
    if spacing == "trailing":
        # t_i = round(last - i·T/N) - 1
        return np.arange(last, 0, -num_train_timesteps / num_steps).round().astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is unknown; allowed values: {', '.join(S.SPACINGS)}")


def inverse_solver_timesteps(
    spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int, noisiest: int
) -> np.ndarray:
    """Ascending int64 timesteps of an inversion run (clean → noisy), ``noisiest`` the last usable timestep."""
    if num_steps < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_steps}")
    if spacing == "linspace":
        # t_i = round(i·noisiest/N), i = 0 … N-1
        return np.linspace(0, noisiest, num_steps + 1).round()[:-1].astype(np.int64)
    if spacing == "leading":
        ratio = (noisiest + 1) // (num_steps + 1)
        return (np.arange(0, num_steps + 1) * ratio).round()[:-1].astype(np.int64) + steps_offset
    if spacing == "trailing":
        # the forward trailing grid, reversed
        return np.arange(noisiest + 1, 0, -num_train_timesteps / num_steps).round()[::-1].astype(np.int64) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is unknown; allowed values: {', '.join(S.SPACINGS)}")


def lu_sigmas(log_sigmas: np.ndarray, num_steps: int) -> np.ndarray:
    """Lu et al. (DPM-Solver++): ``N`` sigmas evenly spaced in ``ln σ`` between the table's ends, float64."""
    hi, lo = float(log_sigmas[-1]), float(log_sigmas[0])
    # ln σ_i = ln σ_max + i/(N-1)·(ln σ_min - ln σ_max)
    return np.exp(hi + np.linspace(0, 1, num_steps) * (lo - hi))


def flow_sigmas(num_train_timesteps: int, num_points: int, shift: float) -> np.ndarray:
    """Descending shifted flow-matching sigmas ``σ ∈ (0, 1)`` on ``num_points`` evenly spaced ``1 - t``, float64."""
    s = 1.0 - np.linspace(1, 1 / num_train_timesteps, num_points)
    # σ' = s·σ/(1 + (s-1)·σ)
    return np.flip(shift * s / (1 + (shift - 1) * s))


def exponential_time_shift(mu: float, sigmas: np.ndarray, power: float = 1.0) -> np.ndarray:
    # σ' = e^μ/(e^μ + (1/σ - 1)^p)
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** power)


def linear_time_shift(mu: float, sigmas: np.ndarray, power: float = 1.0) -> np.ndarray:
    # σ' = μ/(μ + (1/σ - 1)^p)
    return mu / (mu + (1 / sigmas - 1) ** power)


def stretch_to_terminal(sigmas: np.ndarray, terminal: float) -> np.ndarray:
    """Rescale ``1 - σ`` so that the last sigma becomes ``terminal``."""
    one_minus = 1 - sigmas
    # σ' = 1 - (1-σ)·(1-terminal)/(1-σ_last)
    return 1 - one_minus / (one_minus[-1] / (1 - terminal))


def k_sigma_plan(
    kind: str | None,
    alphas_cumprod: torch.Tensor,
    timesteps: np.ndarray,
    num_steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    round_timesteps: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps, sigmas)`` before the final sigma: interpolated at ``timesteps`` or a σ schedule.

    A schedule (``karras``, ``exponential``, ``beta``, ``lu``) replaces the timesteps by those of
    its sigmas (fractional unless ``round_timesteps``, which applies to ``karras`` and ``lu`` only,
    as in the reference).
    """
    table = K.sigma_table(alphas_cumprod).numpy()
    log_sigmas = K.log_sigma_table(table)
    if kind is None:
        return timesteps, K.sigmas_at(timesteps, table)
    if kind == "lu":
        sigmas = lu_sigmas(log_sigmas, num_steps)
    else:
        sigmas = K.sigma_schedule(kind, table[::-1], num_steps, sigma_min, sigma_max)
    ts = K.sigma_to_t(sigmas, log_sigmas)
    if round_timesteps and kind in ("karras", "lu"):
        ts = ts.round()
    return ts, sigmas


def has_duplicates(timesteps: torch.Tensor) -> bool:
    return timesteps.numel() != torch.unique(timesteps).numel()
