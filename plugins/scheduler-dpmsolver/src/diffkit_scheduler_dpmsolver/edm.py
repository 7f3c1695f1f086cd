"""``EDMDPMSolverMultistepScheduler``: DPM-Solver++ multistep on the EDM formulation (Karras et al. 2022)."""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict, Field, PositiveInt, field_validator, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import Scheduler

from .multistep import DPMSolverMultistepState, check_algorithm, remap_algorithm, remap_solver_type
from .state import broadcast_to


class EDMDPMSolverMultistepConfig(Config):
    """Fields and defaults of diffusers' ``EDMDPMSolverMultistepScheduler``."""

    model_config = ConfigDict(ser_json_inf_nan="constants")
    owner_name: ClassVar[str] = "EDMDPMSolverMultistepScheduler"

    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    sigma_data: float = Field(0.5, gt=0)
    sigma_schedule: Literal["karras", "exponential"] = "karras"
    num_train_timesteps: PositiveInt = 1000
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    rho: float = Field(7.0, gt=0)
    solver_order: int = Field(2, ge=1, le=3)
    thresholding: bool = False
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1)
    sample_max_value: float = Field(1.0, gt=0)
    algorithm_type: Literal["dpmsolver++", "sde-dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    lower_order_final: bool = True
    euler_at_final: bool = False
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"

    @field_validator("algorithm_type", mode="before")
    @classmethod
    def _remap_algorithm(cls, value: Any) -> Any:
        return remap_algorithm(value)

    @field_validator("solver_type", mode="before")
    @classmethod
    def _remap_solver(cls, value: Any) -> Any:
        return remap_solver_type(value)

    @model_validator(mode="after")
    def _consistent(self) -> EDMDPMSolverMultistepConfig:
        if self.prediction_type == "sample":
            raise ValueError("prediction_type='sample' is not supported by the EDM preconditioning: use epsilon or v_prediction")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        check_algorithm(self)
        return self


def edm_sigmas(cfg: EDMDPMSolverMultistepConfig, num_points: int) -> torch.Tensor:
    """``num_points`` descending float32 sigmas of the configured schedule between ``sigma_max`` and ``sigma_min``."""
    ramp = torch.linspace(0, 1, num_points)
    if cfg.sigma_schedule == "karras":
        lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        # σ_i = (σ_max^(1/ρ) + r_i·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ
        return (hi + ramp * (lo - hi)) ** cfg.rho
    # σ_i = exp(linspace(ln σ_min, ln σ_max))[reversed]
    return torch.linspace(math.log(cfg.sigma_min), math.log(cfg.sigma_max), num_points).exp().flip(0)


def c_noise(sigmas: torch.Tensor) -> torch.Tensor:
    # c_noise = ¼·ln σ (EDM's timestep conditioning)
    return 0.25 * torch.log(sigmas)


class EDMDPMSolverMultistepState(DPMSolverMultistepState):
    """One EDM run: sigmas ``σ`` with ``α = 1``, the preconditioned model input and output."""

    upcast: ClassVar[bool] = False

    @functools.cached_property
    def _precondition(self) -> list[tuple[float, float, float]]:
        """Per point: (c_in, c_skip, c_out) as Python floats, computed in float32."""
        cfg, sigma = self._cfg, self.sigmas
        sd = cfg.sigma_data
        # c_in = 1/√(σ²+σd²), c_skip = σd²/(σ²+σd²), c_out = ±σ·σd/√(σ²+σd²)
        c_in = 1 / ((sigma**2 + sd**2) ** 0.5)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        if cfg.prediction_type == "v_prediction":
            c_out = -sigma * sd / (sigma**2 + sd**2) ** 0.5
        return list(zip(c_in.tolist(), c_skip.tolist(), c_out.tolist(), strict=True))

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """``c_in·x``; the first call fixes where the run starts.

        As in diffusers, it also works before any plan (on the training ladder), and a timestep the
        run does not list scales with the run's last sigma.
        """
        return sample * self._precondition[self._input_index(timestep)][0]

    def _input_index(self, timestep: Any) -> int:
        if self.step_index is None and self.begin_index is None:
            try:
                i = S.view_position(timestep, self.timesteps) if isinstance(timestep, torch.Tensor) else None
                self.step_index = i if i is not None else S.first_step_index(timestep, self.timesteps, self._host)
            except ValueError:
                self.step_index = len(self._host) - 1
        if self.num_inference_steps is None:
            return self.step_index if self.step_index is not None else self.begin_index  # type: ignore[return-value]
        return self._start(timestep)

    def convert(self, model_output: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
        _, c_skip, c_out = self._precondition[i]
        # D(x) = c_skip·x + c_out·F(x)
        x0 = torch.mul(sample, c_skip).add_(model_output, alpha=c_out) if sample.dtype == model_output.dtype else (
            c_skip * sample + c_out * model_output
        )
        return S.bound_x0(x0, self._threshold, None)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + σ·ε`` at the sigmas of ``timesteps`` in this run (or at the begin/current step)."""
        sigma = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)[self._sigma_indices(timesteps)]
        return original_samples + noise * broadcast_to(sigma, original_samples.ndim)


class EDMDPMSolverMultistepScheduler(Scheduler):
    """DPM-Solver++ (``dpmsolver++``, ``sde-dpmsolver++``) multistep on EDM sigmas with EDM preconditioning.

    Timesteps are ``c_noise = ¼·ln σ`` (floats); ``scale_model_input`` applies ``c_in``. Where
    diffusers differs: the third-order ``sde-dpmsolver++`` step works (diffusers leaves its result
    undefined and fails), ``prediction_type="sample"`` is rejected at construction (diffusers
    fails in ``step``), and ``algorithm_type="deis"`` reads as ``dpmsolver++`` whatever
    ``final_sigmas_type`` is.
    """

    config_class: ClassVar[type[Config]] = EDMDPMSolverMultistepConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: EDMDPMSolverMultistepConfig

    def _setup(self) -> None:
        sigmas = edm_sigmas(self.config, self.config.num_train_timesteps)
        table = torch.cat([sigmas, torch.zeros(1)])
        object.__setattr__(self, "_legacy_state", EDMDPMSolverMultistepState(self, c_noise(sigmas), table, None))

    def alpha_sigma(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α, σ_t) = (1, σ)``: EDM's inputs are scaled by ``c_in`` before the model, not by ``α``."""
        return torch.ones_like(sigmas), sigmas

    @property
    def init_noise_sigma(self) -> float:
        return (self.config.sigma_max**2 + 1) ** 0.5

    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> EDMDPMSolverMultistepState:
        """A fresh run of ``num_inference_steps`` steps."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        cfg = self.config
        sigmas = edm_sigmas(cfg, num_inference_steps).to(torch.float32)
        last = cfg.sigma_min if cfg.final_sigmas_type == "sigma_min" else 0
        table = torch.cat([sigmas, torch.tensor([last], dtype=torch.float32)])
        state = EDMDPMSolverMultistepState(self, c_noise(sigmas), table, num_inference_steps, device)
        state.init_noise_sigma = self.init_noise_sigma
        return state

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None) -> None:
        """diffusers' ``set_timesteps``: a new default run."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return self._state().step(model_output, timestep, sample, generator, return_dict)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return self._state().scale_model_input(sample, timestep)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)

    def precondition_inputs(self, sample: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``c_in(σ)·x``."""
        return sample * (1 / ((sigma**2 + self.config.sigma_data**2) ** 0.5))

    def precondition_noise(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """``c_noise(σ) = ¼·ln σ``."""
        return c_noise(sigma if isinstance(sigma, torch.Tensor) else torch.tensor([sigma]))
