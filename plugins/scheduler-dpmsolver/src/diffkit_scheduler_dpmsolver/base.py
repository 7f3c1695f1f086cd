"""What the VP exponential-integrator schedulers share: config fields and training tables.

``SolverConfig`` holds the fields diffusers' DPM-Solver, DEIS and UniPC schedulers have in common
(each subclass adds its own and overrides defaults); ``VPSolverScheduler`` computes the training
tables once and gives the diffusers-style attributes over the default state.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict, Field

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler

from .schedule import lambda_table, vp_tables
from .solver import flow_alpha_sigma, vp_alpha_sigma

SolverPrediction = Literal["epsilon", "sample", "v_prediction", "flow_prediction"]


class SolverConfig(BetaScheduleConfig):
    """Fields common to diffusers' DPM-Solver, DEIS and UniPC schedulers, with their defaults."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    solver_order: int = Field(2, ge=1, le=3)
    prediction_type: SolverPrediction = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1)
    sample_max_value: float = Field(1.0, gt=0)
    lower_order_final: bool = True
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = Field(1.0, gt=0)

    def check_common(self, *, steps_offset: int = 0) -> None:
        """Raise ``ValueError`` naming the fields when the shared fields disagree."""
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, steps_offset)
        kind = K.chosen_sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
        if kind is not None and self.use_flow_sigmas and not self.flow_with_sigma_schedules():
            raise ValueError(
                f"use_flow_sigmas cannot be combined with use_{kind}_sigmas: the flow signal scale α = 1 - σ "
                "needs sigmas below 1"
            )

    def flow_with_sigma_schedules(self) -> bool:
        """Whether a σ schedule may be mapped into flow sigmas (UniPC does this)."""
        return False

    def sigma_kind(self) -> str | None:
        return K.chosen_sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)


def shift_for(config: SolverConfig, mu: float | None) -> float:
    """The flow shift of one run: ``e^μ`` when ``mu`` is given (dynamic shifting), else ``flow_shift``."""
    if mu is None:
        return config.flow_shift
    if not getattr(config, "use_dynamic_shifting", False):
        raise ValueError("mu is only used with use_dynamic_shifting=True; set it in the config or drop mu")
    return math.exp(mu)


class VPSolverScheduler(Scheduler):
    """Base of the VP solvers: betas, ``alphas_cumprod``, ``α_t``, ``σ_t``, ``λ_t`` and the σ table."""

    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    zero_snr_field: ClassVar[bool] = True

    config: SolverConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alpha_t: torch.Tensor
    sigma_t: torch.Tensor
    lambda_t: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas, alphas_cumprod = vp_tables(
            cfg.beta_schedule,
            cfg.num_train_timesteps,
            cfg.beta_start,
            cfg.beta_end,
            cfg.trained_betas,
            bool(getattr(cfg, "rescale_betas_zero_snr", False)),
        )
        for name, value in (
            ("betas", betas),
            ("alphas", 1.0 - betas),
            ("alphas_cumprod", alphas_cumprod),
            ("alpha_t", torch.sqrt(alphas_cumprod)),
            ("sigma_t", torch.sqrt(1 - alphas_cumprod)),
            ("lambda_t", lambda_table(alphas_cumprod)),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_legacy_state", self._untimed_state())

    def _untimed_state(self) -> Any:
        """The default state before ``set_timesteps``: every training timestep, no steps allowed."""
        raise NotImplementedError

    def alpha_sigma(self, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α, σ_t)`` of k-diffusion sigmas: VP, or rectified flow with ``use_flow_sigmas``."""
        return flow_alpha_sigma(sigmas) if self.config.use_flow_sigmas else vp_alpha_sigma(sigmas)

    @property
    def sigmas(self) -> torch.Tensor:
        """The sigmas of the default state (the training σ table before ``set_timesteps``)."""
        return self._state().sigmas  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-diffuse to ``timesteps`` of the default state's run (``α·x0 + σ_t·ε``)."""
        return self._state().add_noise(original_samples, noise, timesteps)
