"""What the two DPM-2 schedulers share: their config fields, base schedule and interleaved layout."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from diffkit import sigmas as K
from diffkit_scheduler_euler.base import SigmaConfig, SigmaScheduler


class DPM2Config(SigmaConfig):
    """Fields and defaults of diffusers' ``KDPM2DiscreteScheduler`` (and of its ancestral variant)."""

    owner_name: ClassVar[str] = "KDPM2DiscreteScheduler"

    beta_start: float = Field(0.00085, ge=0, le=1)
    beta_end: float = Field(0.012, ge=0, le=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False


def base_schedule(
    scheduler: SigmaScheduler, num_steps: int, num_train_timesteps: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``N`` step timesteps and ``N+1`` sigmas (ending at 0) before interleaving.

    Timesteps are float32, or float64 when Karras (rounded to integers), exponential or beta
    sigmas recompute them, as in diffusers.
    """
    cfg = scheduler.config
    ts = K.float_timesteps(
        cfg.timestep_spacing, num_train_timesteps or cfg.num_train_timesteps, num_steps, cfg.steps_offset
    )
    sig, ts = scheduler.reschedule(K.sigmas_at(ts, scheduler._sigma_table), ts, num_steps)
    if scheduler.sigma_schedule_kind == "karras":
        ts = np.round(ts)
    return torch.from_numpy(np.asarray(ts)), torch.from_numpy(K.with_final_sigma(sig, 0.0))


def log_midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # σ_mid = exp(lerp(ln a, ln b, ½)) = √(a·b), float32
    return a.log().lerp(b.log(), 0.5).exp()


def pairs(values: torch.Tensor) -> torch.Tensor:
    """``v0, v1, v1, …, vN, vN, vN``: the per-step values laid out over the interleaved indices."""
    return torch.cat([values[:1], values[1:].repeat_interleave(2), values[-1:]])


def midpoint_timesteps(scheduler: SigmaScheduler, midpoints: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The timesteps of the midpoint sigmas (log-σ interpolation in float32, as diffusers does there)."""
    ts = K.sigma_to_t(midpoints.numpy(), scheduler._log_sigmas, dtype=np.float32)
    return torch.from_numpy(np.asarray(ts, dtype=np.float32)).to(dtype)


def interleave_timesteps(timesteps: torch.Tensor, midpoint_ts: torch.Tensor) -> torch.Tensor:
    """``t0, m0, t1, m1, t2, …, m_{N-2}, t_{N-1}``: each step's midpoint evaluation before the next step."""
    mixed = torch.stack((midpoint_ts[:, None], timesteps[1:, None]), dim=-1).flatten()
    return torch.cat([timesteps[:1], mixed])
