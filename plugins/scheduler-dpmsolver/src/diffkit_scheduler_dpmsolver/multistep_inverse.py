"""``DPMSolverMultistepInverseScheduler``: DPM-Solver run from data to noise (DDIM-style inversion)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, field_validator, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput

from .base import SolverConfig
from .multistep import (
    DPMSolverMultistepScheduler,
    DPMSolverMultistepState,
    check_algorithm,
    remap_algorithm,
    remap_solver_type,
)
from .schedule import clipped_timesteps, flow_sigmas, inverse_solver_timesteps, k_sigma_plan


class DPMSolverMultistepInverseConfig(SolverConfig):
    """Fields and defaults of diffusers' ``DPMSolverMultistepInverseScheduler``."""

    owner_name: ClassVar[str] = "DPMSolverMultistepInverseScheduler"

    algorithm_type: Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    euler_at_final: bool = False
    lambda_min_clipped: float = -float("inf")
    variance_type: Literal["learned", "learned_range"] | None = None
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0

    @field_validator("algorithm_type", mode="before")
    @classmethod
    def _remap_algorithm(cls, value: Any) -> Any:
        return remap_algorithm(value)

    @field_validator("solver_type", mode="before")
    @classmethod
    def _remap_solver(cls, value: Any) -> Any:
        return remap_solver_type(value)

    @model_validator(mode="after")
    def _consistent(self) -> DPMSolverMultistepInverseConfig:
        self.check_common(steps_offset=self.steps_offset)
        check_algorithm(self)
        return self


class DPMSolverMultistepInverseState(DPMSolverMultistepState):
    """An inversion run: the multistep solver in the sample's dtype, no final-σ=0 rule."""

    upcast: ClassVar[bool] = False
    euler_on_zero: ClassVar[bool] = False

    def _noise(
        self, like: torch.Tensor, generator: Any, variance_noise: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        if variance_noise is not None:
            return variance_noise
        return super()._noise(like, generator, None, dtype)

    def _sigma_indices(self, timesteps: torch.Tensor) -> list[int]:
        return [S.first_step_index(t, self._cpu_timesteps, self._host) for t in timesteps.reshape(-1).cpu()]


class DPMSolverMultistepInverseScheduler(DPMSolverMultistepScheduler):
    """The multistep DPM-Solver(++) walking the timesteps upwards, to invert a sample into noise.

    Timesteps ascend from 0 to the noisiest usable timestep (``lambda_min_clipped``), repeated
    timesteps are dropped (the sigmas keep them, as in diffusers), and the run ends on the
    noisiest sigma. Where diffusers differs: the third-order ``sde-dpmsolver++`` step gets its
    noise (diffusers fails an assertion), ``algorithm_type="deis"`` reads as ``dpmsolver++``, and
    invalid algorithm settings are rejected up front (see :class:`DPMSolverMultistepScheduler`).
    """

    config_class: ClassVar[type[Config]] = DPMSolverMultistepInverseConfig
    state_class: ClassVar[type[DPMSolverMultistepState]] = DPMSolverMultistepInverseState

    config: DPMSolverMultistepInverseConfig  # type: ignore[assignment]

    def _untimed_state(self) -> DPMSolverMultistepState:
        n = self.config.num_train_timesteps
        table = K.sigma_table(self.alphas_cumprod)
        return self.state_class(self, torch.arange(0, n, dtype=torch.float32), table, None)

    def plan(  # type: ignore[override]
        self, num_inference_steps: int | None = None, device: Any = None
    ) -> DPMSolverMultistepState:
        """A fresh inversion run of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("DPMSolverMultistepInverseScheduler.plan needs num_inference_steps")
        cfg, n = self.config, int(num_inference_steps)
        noisiest = cfg.num_train_timesteps - 1 - clipped_timesteps(self.lambda_t, cfg.lambda_min_clipped)
        ts = inverse_solver_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset, noisiest)
        kind = cfg.sigma_kind()
        if cfg.use_flow_sigmas:
            sigmas = flow_sigmas(cfg.num_train_timesteps, n + 1, cfg.flow_shift)[:-1]
            ts = sigmas * cfg.num_train_timesteps
            sigmas = K.with_final_sigma(sigmas, float(np.float32(sigmas[-1])))
        elif kind is not None:
            table = K.sigma_table(self.alphas_cumprod).numpy()
            sigmas = K.sigma_schedule(kind, table, n, cfg.get("sigma_min"), cfg.get("sigma_max"))
            ts = K.sigma_to_t(sigmas, K.log_sigma_table(table))
            if kind == "karras":
                ts = ts.round()
            sigmas = K.with_final_sigma(sigmas, float(np.float32(sigmas[-1])))
        else:
            ts, sigmas = k_sigma_plan(None, self.alphas_cumprod, ts, n)
            noisiest_sigma = float(K.sigma_table(self.alphas_cumprod[noisiest : noisiest + 1])[0])
            sigmas = K.with_final_sigma(sigmas, noisiest_sigma)
        _, first = np.unique(ts, return_index=True)
        ts = ts[np.sort(first)]
        return self._state_for(ts, sigmas, device)

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None) -> None:  # type: ignore[override]
        """diffusers' ``set_timesteps``: a new default inversion run."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return super().step(model_output, timestep, sample, generator, variance_noise, return_dict)
