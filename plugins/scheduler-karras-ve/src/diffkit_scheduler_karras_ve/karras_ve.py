"""``KarrasVeScheduler``: the stochastic sampler of Karras et al. 2022 (Algorithm 2) for
variance-exploding models, with the numbers of diffusers' (deprecated) scheduler.

Each step first raises the noise level from ``σ`` to ``σ̂ = σ + γσ`` by adding fresh noise
("churn", only for ``s_min ≤ σ ≤ s_max``), then takes an Euler step from ``σ̂`` down to the
next level and, unless that level is 0, a second-order (Heun) correction.

A quirk kept for parity: the schedule ``σ_max²·(σ_min²/σ_max²)^(i/(N-1))`` is the paper's
*variance* ladder ``t_i = σ_i²``, yet diffusers uses its values directly as ``σ``; so the
levels actually run from ``σ_max²`` down to ``σ_min²`` (10⁴ to 4·10⁻⁴ with the defaults),
while ``init_noise_sigma`` is ``σ_max``. diffkit does the same, so that checkpoints tuned
against diffusers give the same images.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState

Level = float | torch.Tensor

#: the largest churn γ: it at most doubles the noise variance
MAX_CHURN = 2**0.5 - 1


@dataclasses.dataclass
class KarrasVeOutput(BaseOutput):
    """An Euler step or its correction: the next sample, the derivative ``dx/dσ`` used and ``x̂0``."""

    prev_sample: torch.Tensor
    derivative: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class KarrasVeConfig(Config):
    """Fields and defaults of diffusers' ``KarrasVeScheduler``."""

    owner_name: ClassVar[str] = "KarrasVeScheduler"

    sigma_min: float = Field(0.02, gt=0)
    sigma_max: float = Field(100.0, gt=0)
    s_noise: float = Field(1.007, ge=0)
    s_churn: float = Field(80.0, ge=0)
    s_min: float = Field(0.05, ge=0)
    s_max: float = Field(50.0, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> KarrasVeConfig:
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})")
        return self


def karras_ve_schedule(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Float32 levels indexed by timestep ``i`` (``N-1`` is the noisiest), one power per value as the reference does."""
    if num_steps < 2:
        raise ValueError(f"KarrasVeScheduler needs num_inference_steps >= 2 (the schedule divides by N - 1), got {num_steps}")
    ratio = sigma_min**2 / sigma_max**2
    # s_i = σ_max²·(σ_min²/σ_max²)^(i/(N-1)), listed for i = N-1 … 0 (so that entry j is level N-1-j)
    levels = [sigma_max**2 * torch.pow(ratio, torch.tensor(i) / (num_steps - 1)) for i in range(num_steps - 1, -1, -1)]
    return torch.stack(levels).to(torch.float32)


def euler_step(model_output: torch.Tensor, sigma_hat: Level, sigma_prev: Level, sample_hat: torch.Tensor) -> KarrasVeOutput:
    """Euler step from ``σ̂`` to ``σ_prev`` for a model that predicts ``(x̂0 - x)/σ``."""
    # x̂0 = x̂ + σ̂·D;  d = (x̂ - x̂0)/σ̂;  x_prev = x̂ + (σ_prev - σ̂)·d
    x0 = sample_hat + sigma_hat * model_output
    derivative = (sample_hat - x0) / sigma_hat
    prev = sample_hat + (sigma_prev - sigma_hat) * derivative
    return KarrasVeOutput(prev_sample=prev, derivative=derivative, pred_original_sample=x0)


def heun_correction(
    model_output: torch.Tensor,
    sigma_hat: Level,
    sigma_prev: Level,
    sample_hat: torch.Tensor,
    sample_prev: torch.Tensor,
    derivative: torch.Tensor,
) -> KarrasVeOutput:
    """Second-order correction of an Euler step with the derivative re-evaluated at ``σ_prev``."""
    # x̂0' = x_prev + σ_prev·D';  d' = (x_prev - x̂0')/σ_prev;  x_prev = x̂ + (σ_prev - σ̂)·(d/2 + d'/2)
    x0 = sample_prev + sigma_prev * model_output
    corrected = (sample_prev - x0) / sigma_prev
    prev = sample_hat + (sigma_prev - sigma_hat) * (0.5 * derivative + 0.5 * corrected)
    return KarrasVeOutput(prev_sample=prev, derivative=derivative, pred_original_sample=x0)


def _noise_device(generator: torch.Generator | list[torch.Generator] | None) -> torch.device:
    """Where noise the reference draws on the CPU is drawn: the CPU, or an accelerator generator's device."""
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    return first.device if first is not None else torch.device("cpu")


class KarrasVeState(SchedulerState):
    """One run: timesteps ``N-1 … 0`` and the level ``schedule[t]`` of each."""

    order = 2

    def __init__(self, scheduler: KarrasVeScheduler, num_inference_steps: int, device: Any = None) -> None:
        cfg = scheduler.config
        timesteps = torch.arange(num_inference_steps - 1, -1, -1)
        super().__init__(
            scheduler,
            timesteps.to(device) if device is not None else timesteps,
            num_inference_steps,
            init_noise_sigma=cfg.sigma_max,
        )
        schedule = karras_ve_schedule(num_inference_steps, cfg.sigma_min, cfg.sigma_max)
        #: the level of timestep t is ``schedule[t]`` (see the module note: used directly as σ)
        self.schedule = schedule.to(device) if device is not None else schedule
        self._churn = min(cfg.s_churn / num_inference_steps, MAX_CHURN)
        self._float32_bounds = tuple(torch.tensor([cfg.s_min, cfg.s_max], dtype=torch.float32).tolist())
        self._config = cfg

    def levels(self, t: int) -> tuple[torch.Tensor, torch.Tensor | int]:
        """``(σ, σ_prev)`` of host timestep ``t``: ``schedule[t]`` and ``schedule[t-1]``, or 0 at ``t = 0``."""
        return self.schedule[t], (self.schedule[t - 1] if t > 0 else 0)

    def add_noise_to_input(
        self,
        sample: torch.Tensor,
        sigma: Level,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, Level]:
        """Raise the noise from ``σ`` to ``σ̂ = (1 + γ)σ``; ``γ > 0`` only for ``s_min ≤ σ ≤ s_max``.

        The noise is drawn on the CPU (or the generator's device) in float32 even when ``γ = 0``,
        as the reference draws it, so that later draws line up.
        """
        cfg = self._config
        gamma: Level
        if not isinstance(sigma, torch.Tensor):
            gamma = self._churn if cfg.s_min <= sigma <= cfg.s_max else 0.0
        elif sigma.device.type == "cpu" and sigma.dtype == torch.float32 and sigma.numel() == 1:
            # reading a CPU value is free; torch compares a float32 tensor with the bounds rounded to float32
            lo, hi = self._float32_bounds
            gamma = self._churn if lo <= sigma.item() <= hi else 0.0
        else:
            # decided on the device, without reading σ back
            inside = (sigma >= cfg.s_min) & (sigma <= cfg.s_max)
            gamma = torch.where(inside, torch.full_like(sigma, self._churn), torch.zeros_like(sigma))
        eps = cfg.s_noise * randn_tensor(sample.shape, generator=generator, device=_noise_device(generator)).to(sample.device)
        # σ̂ = σ + γσ;  x̂ = x + √(σ̂² - σ²)·S_noise·z
        sigma_hat = sigma + gamma * sigma
        sample_hat = sample + (sigma_hat**2 - sigma**2) ** 0.5 * eps
        return sample_hat, sigma_hat

    def step(
        self,
        model_output: torch.Tensor,
        sigma_hat: Level,
        sigma_prev: Level,
        sample_hat: torch.Tensor,
        return_dict: bool = True,
    ) -> KarrasVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """Euler step from ``σ̂`` to ``σ_prev``."""
        out = euler_step(model_output, sigma_hat, sigma_prev, sample_hat)
        return out if return_dict else (out.prev_sample, out.derivative)

    def step_correct(
        self,
        model_output: torch.Tensor,
        sigma_hat: Level,
        sigma_prev: Level,
        sample_hat: torch.Tensor,
        sample_prev: torch.Tensor,
        derivative: torch.Tensor,
        return_dict: bool = True,
    ) -> KarrasVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """Heun correction of the Euler step that produced ``sample_prev``."""
        out = heun_correction(model_output, sigma_hat, sigma_prev, sample_hat, sample_prev, derivative)
        return out if return_dict else (out.prev_sample, out.derivative)


class KarrasVeScheduler(Scheduler):
    """Stochastic sampling of Karras et al. 2022 (Algorithm 2) for variance-exploding models.

    ``state = scheduler.plan(n)`` (``n ≥ 2``) gives timesteps ``n-1 … 0`` and
    ``state.schedule``; per timestep a pipeline calls ``add_noise_to_input``, ``step`` and,
    unless the next level is 0, ``step_correct``. See the module note on the schedule quirk.
    """

    config_class: ClassVar[type[Config]] = KarrasVeConfig
    order: ClassVar[int] = 2

    config: KarrasVeConfig

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> KarrasVeState:
        """A fresh sampling state of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("KarrasVeScheduler.plan needs num_inference_steps")
        return KarrasVeState(self, num_inference_steps, device)

    @property
    def init_noise_sigma(self) -> float:
        return self.config.sigma_max

    @property
    def schedule(self) -> torch.Tensor:
        return self._state().schedule  # type: ignore[attr-defined]

    def add_noise_to_input(
        self,
        sample: torch.Tensor,
        sigma: Level,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> tuple[torch.Tensor, Level]:
        """diffusers' ``add_noise_to_input`` on the default state."""
        return self._state().add_noise_to_input(sample, sigma, generator)  # type: ignore[attr-defined]

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        sigma_hat: Level,
        sigma_prev: Level,
        sample_hat: torch.Tensor,
        return_dict: bool = True,
    ) -> KarrasVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """Euler step from ``σ̂`` to ``σ_prev`` (needs no state)."""
        out = euler_step(model_output, sigma_hat, sigma_prev, sample_hat)
        return out if return_dict else (out.prev_sample, out.derivative)

    def step_correct(
        self,
        model_output: torch.Tensor,
        sigma_hat: Level,
        sigma_prev: Level,
        sample_hat: torch.Tensor,
        sample_prev: torch.Tensor,
        derivative: torch.Tensor,
        return_dict: bool = True,
    ) -> KarrasVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """Heun correction (needs no state)."""
        out = heun_correction(model_output, sigma_hat, sigma_prev, sample_hat, sample_prev, derivative)
        return out if return_dict else (out.prev_sample, out.derivative)
