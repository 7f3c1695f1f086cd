"""``EDMEulerScheduler``: Euler sampling with the EDM preconditioning (Karras et al. 2022), with diffusers' numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator

from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler

from .base import SigmaState, f32, output, reject_integer_timestep
from .euler import churned_sigma


class EDMEulerConfig(Config):
    """Fields and defaults of diffusers' ``EDMEulerScheduler``."""

    owner_name: ClassVar[str] = "EDMEulerScheduler"

    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    sigma_data: float = Field(0.5, gt=0)
    sigma_schedule: Literal["karras", "exponential"] = "karras"
    num_train_timesteps: PositiveInt = 1000
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    rho: float = Field(7.0, gt=0)
    final_sigmas_type: K.FinalSigmasType = "zero"

    @model_validator(mode="after")
    def _bounds(self) -> EDMEulerConfig:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})")
        return self


def edm_sigmas(ramp: torch.Tensor, config: EDMEulerConfig) -> torch.Tensor:
    """Sigmas at ramp positions ``0 … 1`` (σ_max … σ_min), float32."""
    lo, hi = config.sigma_min, config.sigma_max
    if config.sigma_schedule == "karras":
        rho = config.rho
        lo_r, hi_r = lo ** (1 / rho), hi ** (1 / rho)
        # σ(r) = (σ_max^(1/ρ) + r·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ, in float64
        sigmas = (hi_r + ramp.to(torch.float64) * (lo_r - hi_r)) ** rho
    else:
        # σ_i = exp(ln σ_max + i/(n-1)·(ln σ_min - ln σ_max)); only the ramp's length counts
        sigmas = torch.linspace(math.log(lo), math.log(hi), len(ramp)).exp().flip(0)
    return sigmas.to(torch.float32)


def noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    # c_noise = ¼·ln σ
    return 0.25 * torch.log(sigma)


def input_scale(sigma: Any, sigma_data: float) -> Any:
    # c_in = 1/√(σ² + σ_d²)
    return 1 / ((sigma**2 + sigma_data**2) ** 0.5)


def output_scales(sigma: Any, sigma_data: float, prediction_type: str) -> tuple[Any, Any]:
    """``(c_skip, c_out)`` of the denoiser ``D(x) = c_skip·x + c_out·F(x)`` (tensors or float32 arrays)."""
    # c_skip = σ_d²/(σ² + σ_d²)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    # c_out = ±σ·σ_d/√(σ² + σ_d²): + for ε-prediction, - for v-prediction
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    if prediction_type == "v_prediction":
        c_out = -c_out
    elif prediction_type != "epsilon":
        raise ValueError(f"prediction_type {prediction_type!r} is not supported; use epsilon or v_prediction")
    return c_skip, c_out


def edm_slope(sigma: float, sigma_data: float, prediction_type: str) -> tuple[float, float]:
    """``(c1, c2)`` of ``d = (x - D(x))/σ = c1·x + c2·F``, in float64 and free of cancellation."""
    root = (sigma**2 + sigma_data**2) ** 0.5
    # c1 = (1 - c_skip)/σ = σ/(σ² + σ_d²);  c2 = -c_out/σ = ∓σ_d/√(σ² + σ_d²)
    c2 = -sigma_data / root if prediction_type == "epsilon" else sigma_data / root
    return sigma / root**2, c2


class EDMEulerState(SigmaState):
    """One EDM Euler run: per step σ and the preconditioning factors at σ (float32)."""

    owner: ClassVar[str] = "EDMEulerScheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        sig = self.sigmas
        self._c_in = input_scale(sig, cfg.sigma_data).tolist()
        c_skip, c_out = output_scales(sig, cfg.sigma_data, cfg.prediction_type)
        self._c = list(zip(c_skip.tolist(), c_out.tolist(), strict=True))

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The model input ``c_in·x`` with ``c_in = 1/√(σ² + σ_d²)``."""
        i = self._start(timestep)
        self._scaled = True
        return torch.mul(sample, self._c_in[i])

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
        pred_original_sample: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One Euler step on the denoiser ``D = c_skip·x + c_out·F``; ``pred_original_sample`` replaces ``D``.

        ``s_churn > 0`` first raises σ to ``σ̂ = σ·(1+γ)`` with fresh noise, as in Karras et al.'s Alg. 2.
        """
        reject_integer_timestep(timestep, self.owner)
        self._warn_unscaled()
        i = self._start(timestep)
        if i + 1 >= len(self._sigma):
            raise self._past_end(i)
        sigma, sigma_next = self._sigma[i], self._sigma[i + 1]
        x = sample.to(torch.float32)
        sigma_hat, (c_skip, c_out) = sigma, self._c[i]
        if s_churn != 0:
            sigma_hat, gamma = churned_sigma(sigma, len(self._sigma), s_churn, s_tmin, s_tmax)
            hat = np.float32(sigma_hat)
            skip_out = output_scales(np.array([hat]), self.config.sigma_data, self.config.prediction_type)
            c_skip, c_out = (float(c[0]) for c in skip_out)
            if gamma > 0:
                noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
                lift = float(np.sqrt(hat**2 - np.float32(sigma) ** 2))
                # x ← x + s_noise·√(σ̂² - σ²)·z
                x = torch.add(x, noise, alpha=s_noise * lift)
        dt = f32(sigma_next - sigma_hat)
        if pred_original_sample is None:
            # x0 = c_skip·x + c_out·F
            x0 = torch.mul(x, c_skip).add_(model_output, alpha=c_out)
            c1, c2 = edm_slope(sigma_hat, self.config.sigma_data, self.config.prediction_type)
            # x_next = x + dt·d = (1 + dt·c1)·x + dt·c2·F
            prev = torch.mul(x, 1 + dt * c1).add_(model_output, alpha=dt * c2)
        else:
            x0 = pred_original_sample
            # x_next = x + (x - x0)/σ̂·(σ_next - σ̂) = lerp(x, x0, -(σ_next - σ̂)/σ̂)
            prev = torch.lerp(x, x0.to(torch.float32), -dt / sigma_hat)
        self.step_index = i + 1
        return output(prev.to(model_output.dtype), x0, return_dict)


class EDMEulerScheduler(Scheduler):
    """Euler sampling in σ with EDM's preconditioning; the timesteps are ``c_noise = ¼·ln σ``.

    Sigmas follow ``sigma_schedule`` between ``sigma_max`` and ``sigma_min`` (Karras with ``rho``,
    or exponential) and end with 0 or σ_min (``final_sigmas_type``). ``plan(sigmas=…)`` takes
    *ramp positions* in ``[0, 1]`` that the schedule maps to sigmas — diffusers' meaning of the
    argument (0 is σ_max, 1 is σ_min); with the exponential schedule only their number counts.
    ``init_noise_sigma`` is ``√(σ_max² + 1)``, as in diffusers. Like diffusers, this class names
    no compatible configs.
    """

    config_class: ClassVar[type[Config]] = EDMEulerConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: EDMEulerConfig

    def _setup(self) -> None:
        n = self.config.num_train_timesteps
        ramp = torch.arange(n + 1, dtype=torch.float64) / n
        object.__setattr__(self, "_legacy_state", self._state_for(ramp, None, None))

    def _state_for(self, ramp: torch.Tensor, num_steps: int | None, device: Any) -> EDMEulerState:
        cfg = self.config
        sigmas = edm_sigmas(ramp, cfg)
        last = sigmas[-1:] if cfg.final_sigmas_type == "sigma_min" else torch.zeros(1)
        # √(σ_max² + 1)
        init = (cfg.sigma_max**2 + 1) ** 0.5
        full = torch.cat([sigmas, last])
        return EDMEulerState(self, noise_conditioning(sigmas), full, num_steps, device, init_noise_sigma=init)

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> EDMEulerState:
        """A fresh run of ``num_inference_steps`` steps, or over custom ramp positions ``sigmas``."""
        if sigmas is None:
            if num_inference_steps is None or int(num_inference_steps) < 1:
                raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
            n = int(num_inference_steps)
            return self._state_for(torch.linspace(0, 1, n, dtype=torch.float64), n, device)
        ramp = torch.as_tensor(np.asarray(sigmas.cpu() if isinstance(sigmas, torch.Tensor) else sigmas, np.float64))
        if ramp.ndim != 1 or len(ramp) == 0 or not bool(torch.isfinite(ramp).all()):
            raise ValueError(
                f"sigmas (ramp positions in [0, 1]) must be a non-empty 1-D list of finite values, got {sigmas!r}"
            )
        return self._state_for(ramp, len(ramp), device)

    # -- the diffusers-style surface ----------------------------------------------------
    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    def precondition_inputs(self, sample: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``c_in·x``."""
        return sample * input_scale(sigma, self.config.sigma_data)

    def precondition_noise(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """``c_noise = ¼·ln σ`` (a 1-element tensor for a float)."""
        return noise_conditioning(sigma if isinstance(sigma, torch.Tensor) else torch.tensor([sigma]))

    def precondition_outputs(
        self, sample: torch.Tensor, model_output: torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """The denoised estimate ``c_skip·x + c_out·F``."""
        c_skip, c_out = output_scales(sigma, self.config.sigma_data, self.config.prediction_type)
        return c_skip * sample + c_out * model_output

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
        pred_original_sample: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``EDMEulerScheduler.step``, argument order included, on the default run."""
        return self._state().step(  # type: ignore[call-arg]
            model_output,
            timestep,
            sample,
            s_churn,
            s_tmin,
            s_tmax,
            s_noise,
            generator,
            return_dict,
            pred_original_sample,
        )

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        return self._state().index_for_timestep(timestep, schedule_timesteps)  # type: ignore[attr-defined]
