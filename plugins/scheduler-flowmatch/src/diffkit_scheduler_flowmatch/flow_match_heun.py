"""``FlowMatchHeunDiscreteScheduler``: Heun (2nd-order) sampling of a rectified flow, with diffusers' numbers."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from pydantic import Field, PositiveInt

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState

from . import _flow as F


class FlowMatchHeunConfig(Config):
    """Fields and defaults of diffusers' ``FlowMatchHeunDiscreteScheduler``."""

    owner_name: ClassVar[str] = "FlowMatchHeunDiscreteScheduler"

    num_train_timesteps: PositiveInt = 1000
    shift: float = Field(1.0, gt=0)


@dataclasses.dataclass
class FlowMatchHeunDiscreteSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample after this (half) step."""

    prev_sample: Any


def interleave(values: torch.Tensor) -> torch.Tensor:
    # [v0, v1, v2, …] → [v0, v1, v1, v2, v2, …]
    return torch.cat([values[:1], values[1:].repeat_interleave(2)])


def churn(sigma: float, s_churn: float, s_tmin: float, s_tmax: float, num_sigmas: int) -> float:
    # γ = min(s_churn/(len(σ)-1), √2 - 1) where s_tmin ≤ σ ≤ s_tmax, else 0
    if not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / (num_sigmas - 1), 2**0.5 - 1)


def derivative_at(sample: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_hat: float) -> torch.Tensor:
    """``(x - x0)/σ̂`` with ``x0 = x - σ·v``, rounded as written (a fresh float32 tensor)."""
    if velocity.dtype == sample.dtype:
        x0 = torch.mul(velocity, sigma)
        x0 = torch.sub(sample, x0, out=x0)
    else:
        x0 = sample - velocity * sigma
    # d = (x - x0)/σ̂
    return torch.sub(sample, x0, out=x0).div_(sigma_hat)


class FlowMatchHeunState(SchedulerState):
    """One run: interleaved timesteps/sigmas and the predictor's derivative, step and sample."""

    order = 2

    def __init__(
        self,
        scheduler: FlowMatchHeunDiscreteScheduler,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        self.sigmas = sigmas.to(device) if device is not None else sigmas
        self._cpu_sigmas = sigmas
        self._host: list[float] = timesteps.tolist()
        self._host_sigmas: list[float] = sigmas.tolist()
        # the predictor's σ_{i+1} - σ_i without churn, float32
        self._dt: list[float] = (sigmas[1:] - sigmas[:-1]).tolist()
        self.prev_derivative: torch.Tensor | None = None
        self.dt: float | None = None
        self.sample: torch.Tensor | None = None

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next step is a predictor (Euler) step."""
        return self.dt is None

    def _index_of(self, timestep: Any) -> int:
        if isinstance(timestep, torch.Tensor):
            i = S.view_position(timestep, self.timesteps)
            if i is not None:
                return F.first_match(self._host, self._host[i])
        return F.first_match(self._host, F.as_float32(timestep))

    def _current_index(self, timestep: Any) -> int:
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self._index_of(timestep)
        i = self.step_index
        if i >= len(self._host) or (self.state_in_first_order and i + 1 >= len(self._host_sigmas)):
            raise ValueError(f"all {len(self._host)} steps of this run have been taken; plan a new run")
        return self.step_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
    ) -> FlowMatchHeunDiscreteSchedulerOutput | tuple[torch.Tensor]:
        """A predictor (Euler) or corrector (trapezoid) half step, alternating, in float32.

        Predictor: ``d = (x - x0)/σ̂``, ``x' = x + d·(σ_next - σ̂)``; corrector: the average of
        ``d`` and the derivative at ``σ_next``, applied from the predictor's starting sample.
        With ``s_churn > 0`` noise ``√(σ̂² - σ²)·s_noise·z`` first raises σ to ``σ̂ = σ(1+γ)``.
        """
        F.check_not_integer(timestep, "FlowMatchHeunDiscreteScheduler")
        i = self._current_index(timestep)
        first = self.state_in_first_order
        sample = sample.to(torch.float32)
        sigmas = self._host_sigmas
        sigma, sigma_next = (sigmas[i], sigmas[i + 1]) if first else (sigmas[i - 1], sigmas[i])
        sigma_hat, dt = sigma, self._dt[i] if first else None
        gamma = churn(sigma, s_churn, s_tmin, s_tmax, len(sigmas)) if s_churn else 0.0
        if gamma > 0:
            s = torch.tensor(sigma, dtype=torch.float32)
            hat = s * (gamma + 1)
            # σ̂ = σ(1+γ);  x ← x + s_noise·z·√(σ̂² - σ²)
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
            sample = sample + (noise * s_noise) * ((hat**2 - s**2) ** 0.5).item()
            sigma_hat = hat.item()
            if first:
                dt = (torch.tensor(sigma_next, dtype=torch.float32) - hat).item()

        if first:
            # x0 = x - σ·v;  d = (x - x0)/σ̂
            derivative = derivative_at(sample, model_output, sigma, sigma_hat)
            self.prev_derivative, self.dt, self.sample = derivative, dt, sample
            # x' = x + d·Δσ
            prev = torch.mul(derivative, dt).add_(sample)
        else:
            derivative = derivative_at(sample, model_output, sigma_next, sigma_next)
            # d = (d_predictor + d_next)/2, stepped from the predictor's sample
            derivative = torch.add(self.prev_derivative, derivative, out=derivative).mul_(0.5)  # type: ignore[arg-type]
            prev = derivative.mul_(self.dt).add_(self.sample)  # type: ignore[arg-type]
            self.prev_derivative, self.dt, self.sample = None, None, None
        prev = prev.to(model_output.dtype)
        self.step_index = i + 1
        if not return_dict:
            return (prev,)
        return FlowMatchHeunDiscreteSchedulerOutput(prev_sample=prev)

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """Forward process to the sigma of ``timestep`` (which starts the run's step count)."""
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self._index_of(timestep)
        sigma = self.sigmas[self.step_index]
        # x_σ = σ·ε + (1-σ)·x0
        return sigma * noise + (1.0 - sigma) * sample


class FlowMatchHeunDiscreteScheduler(Scheduler):
    """Heun sampling of rectified-flow models: an Euler predictor and a trapezoidal corrector.

    Timesteps (``t = σ·T``) and sigmas are interleaved so that each interior value is visited
    twice (``order = 2``); the last step is a single Euler step to ``σ = 0``.
    """

    config_class: ClassVar[type[Config]] = FlowMatchHeunConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 2

    config: FlowMatchHeunConfig
    sigma_min: float
    sigma_max: float

    def _setup(self) -> None:
        cfg = self.config
        sigmas = F.shift_sigmas(F.training_sigmas(cfg.num_train_timesteps), cfg.shift)
        object.__setattr__(self, "sigma_min", sigmas[-1].item())
        object.__setattr__(self, "sigma_max", sigmas[0].item())
        training = FlowMatchHeunState(self, sigmas * cfg.num_train_timesteps, sigmas, None)
        object.__setattr__(self, "_legacy_state", training)

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> FlowMatchHeunState:
        """A fresh run of ``num_inference_steps`` Heun steps (``2n - 1`` model evaluations)."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        cfg = self.config
        n_train = cfg.num_train_timesteps
        grid = F.np_linspace(self.sigma_max * n_train, self.sigma_min * n_train, num_inference_steps) / n_train
        sigmas = F.shift_sigmas(grid, cfg.shift).to(torch.float32)
        timesteps = interleave(sigmas * n_train)
        sigmas = torch.cat([sigmas, torch.zeros(1)])
        sigmas = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]])
        return FlowMatchHeunState(self, timesteps, sigmas, num_inference_steps, device)

    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    @property
    def state_in_first_order(self) -> bool:
        return self._state().state_in_first_order  # type: ignore[attr-defined]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> FlowMatchHeunDiscreteSchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default state."""
        return self._state().step(  # type: ignore[call-arg]
            model_output, timestep, sample, generator, return_dict,
            s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise,
        )

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """diffusers' ``scale_noise`` on the default state."""
        return self._state().scale_noise(sample, timestep, noise)  # type: ignore[attr-defined]
