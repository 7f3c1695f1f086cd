"""``HeunDiscreteScheduler``: Heun's second-order sampler in σ (Karras et al. 2022, Alg. 1), with diffusers' numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_euler.base import (
    SigmaConfig,
    SigmaScheduler,
    SigmaState,
    as_float_array,
    denoised,
    output,
    slope,
    v_factors,
)


class HeunConfig(SigmaConfig):
    """Fields and defaults of diffusers' ``HeunDiscreteScheduler``."""

    owner_name: ClassVar[str] = "HeunDiscreteScheduler"

    beta_start: float = Field(0.00085, ge=0, le=1)
    beta_end: float = Field(0.012, ge=0, le=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "exp"] = "linear"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False
    clip_sample: bool = False
    clip_sample_range: float = Field(1.0, gt=0)


def heun_interleave(sigmas: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two evaluations per step: ``σ0, σ1, σ1, …, σ_{N-1}, σ_{N-1}, σ_N`` and ``t0, t1, t1, …, t_{N-1}, t_{N-1}``."""
    sig = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
    ts = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
    return sig, ts


class HeunState(SigmaState):
    """One Heun run over interleaved sigmas; between the two stages of a step it holds ``x``, ``d`` and ``dt``.

    At an even index (first stage) it takes an Euler step ``σ_i → σ_{i+1}``; at the odd index
    after it (second stage) it evaluates the model at ``σ_{i+1}`` and redoes the step from the
    stored ``x`` with the mean of both derivatives. The last step is first stage only.
    """

    owner: ClassVar[str] = "HeunDiscreteScheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        self._v = v_factors(self.sigmas)
        self._prediction_type = cfg.prediction_type
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None
        self.prev_derivative: torch.Tensor | None = None
        self.dt: float | None = None
        self.sample: torch.Tensor | None = None

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next step is the first stage of a Heun step."""
        return self.dt is None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
        *,
        generator: Any = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One stage of a Heun step (``generator`` is accepted and unused: Heun draws no noise)."""
        i = self._start(timestep)
        first = self.dt is None
        if i + (1 if first else 0) >= len(self._sigma) or (not first and i == 0):
            raise self._past_end(i)
        # the model was evaluated at σ_i in both stages
        sigma_in = self._sigma[i]
        pt = self._prediction_type
        x0 = denoised(model_output, sample, sigma_in, self._v[i], pt)
        if self._clip is not None:
            # x0 ← clamp(x0, -r, r)
            x0 = x0.clamp(-self._clip, self._clip)
        d = slope(model_output, sample, x0, sigma_in, self._v[i], pt, from_output=self._clip is None)
        if first:
            sigma, sigma_next = self._sigma[i], self._sigma[i + 1]
            d = d.clone() if d is model_output else d
            dt = float(np.float32(sigma_next) - np.float32(sigma))
            self.prev_derivative, self.dt, self.sample = d, dt, sample
            # x_next = x + (σ_next - σ)·d
            prev = torch.add(sample, d, alpha=dt)
        else:
            d1, dt, start = self.prev_derivative, self.dt, self.sample
            self.prev_derivative, self.dt, self.sample = None, None, None
            # x_next = x + (σ_next - σ)·(d1 + d2)/2
            prev = torch.add(start, d1.add_(d), alpha=dt / 2)  # type: ignore[union-attr,arg-type]
        self.step_index = i + 1
        return output(prev, x0, return_dict)


class HeunDiscreteScheduler(SigmaScheduler):
    """Heun's method (k-diffusion ``sample_heun`` without churn): order 2, two model evaluations per step.

    ``timesteps`` lists each interior timestep twice (``2N-1`` entries for ``N`` steps) and the
    state tracks which stage comes next. Plans like diffusers: ``timestep_spacing`` over
    ``num_train_timesteps`` (which ``plan`` may override), σ interpolated linearly in ``t``,
    optional Karras/exponential/beta sigmas (bounded by ``sigma_min``/``sigma_max`` when a
    swapped config carries them), final σ = 0. ``clip_sample`` clamps the x0 estimate. Where
    diffusers differs: ``trailing`` always gives ``N`` timesteps; the run starts at the position
    of the first timestep given (see :class:`~diffkit_scheduler_euler.base.SigmaState`).
    """

    config_class: ClassVar[type[Config]] = HeunConfig
    order: ClassVar[int] = 2

    config: HeunConfig

    def _initial_state(self) -> HeunState:
        n = self.config.num_train_timesteps
        return self.plan(n, None, n)

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        num_train_timesteps: int | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> HeunState:
        """A fresh run of ``num_inference_steps`` steps, or over custom descending ``timesteps``."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        cfg = self.config
        if timesteps is not None:
            self.check_custom_timesteps(self.sigma_schedule_kind)
            ts = as_float_array(timesteps, "timesteps")
            n = len(ts)
        else:
            n = int(num_inference_steps)  # type: ignore[arg-type]
            ts = K.float_timesteps(
                cfg.timestep_spacing, num_train_timesteps or cfg.num_train_timesteps, n, cfg.steps_offset
            )
        sig, ts = self.reschedule(K.sigmas_at(ts, self._sigma_table), ts, n)
        sigmas = torch.from_numpy(K.with_final_sigma(sig, 0.0))
        sigmas, steps = heun_interleave(sigmas, torch.from_numpy(np.asarray(ts)))
        return HeunState(self, steps.to(torch.float32), sigmas, n, device)

    @property
    def state_in_first_order(self) -> bool:
        return self._state().state_in_first_order  # type: ignore[attr-defined]

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``HeunDiscreteScheduler.step`` on the default run."""
        return self._state().step(model_output, timestep, sample, return_dict)
