"""``DPMSolverMultistepScheduler``: DPM-Solver and DPM-Solver++ multistep (Lu et al. 2022, 2023)."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, field_validator, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor

from .base import SolverConfig, VPSolverScheduler, shift_for
from .schedule import clipped_timesteps, flow_sigmas, has_duplicates, k_sigma_plan, solver_timesteps
from .solver import Weights, combine, half_log_snr, multistep_weights, second_order_terms, sub_scaled
from .state import SolverState, broadcast_to

logger = logging.getLogger("diffkit.schedulers.dpmsolver")

_DATA = ("dpmsolver++", "sde-dpmsolver++")
_SDE = ("sde-dpmsolver", "sde-dpmsolver++")


def remap_algorithm(value: Any) -> Any:
    """diffusers accepts DEIS's ``algorithm_type="deis"`` and reads it as ``dpmsolver++``."""
    return "dpmsolver++" if value == "deis" else value


def remap_solver_type(value: Any) -> Any:
    """diffusers reads the DEIS/UniPC solver types ``logrho``, ``bh1``, ``bh2`` as ``midpoint``."""
    return "midpoint" if value in ("logrho", "bh1", "bh2") else value


class DPMSolverMultistepConfig(SolverConfig):
    """Fields and defaults of diffusers' ``DPMSolverMultistepScheduler``."""

    owner_name: ClassVar[str] = "DPMSolverMultistepScheduler"

    algorithm_type: Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    euler_at_final: bool = False
    use_lu_lambdas: bool = False
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    lambda_min_clipped: float = -float("inf")
    variance_type: Literal["learned", "learned_range"] | None = None
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0
    rescale_betas_zero_snr: bool = False
    use_dynamic_shifting: bool = False
    time_shift_type: Literal["exponential"] = "exponential"

    @field_validator("algorithm_type", mode="before")
    @classmethod
    def _remap_algorithm(cls, value: Any) -> Any:
        return remap_algorithm(value)

    @field_validator("solver_type", mode="before")
    @classmethod
    def _remap_solver(cls, value: Any) -> Any:
        return remap_solver_type(value)

    @model_validator(mode="after")
    def _consistent(self) -> DPMSolverMultistepConfig:
        self.check_common(steps_offset=self.steps_offset)
        check_algorithm(self)
        if self.use_lu_lambdas and (self.sigma_kind() or self.use_flow_sigmas):
            raise ValueError(
                "use_lu_lambdas cannot be combined with use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas "
                "or use_flow_sigmas: choose one sigma schedule"
            )
        return self


def check_algorithm(cfg: Any) -> None:
    """Reject the algorithm settings that diffusers accepts but cannot run."""
    algorithm = cfg.algorithm_type
    if algorithm not in _DATA and getattr(cfg, "final_sigmas_type", "sigma_min") == "zero":
        raise ValueError(
            f"final_sigmas_type='zero' is not supported with algorithm_type={algorithm!r} (it divides by σ=0); "
            "use final_sigmas_type='sigma_min' or algorithm_type='dpmsolver++'/'sde-dpmsolver++'"
        )
    if algorithm == "sde-dpmsolver" and cfg.solver_order == 3:
        raise ValueError("algorithm_type='sde-dpmsolver' has no third-order solver: use solver_order 1 or 2")
    if algorithm not in _DATA and cfg.prediction_type == "flow_prediction":
        raise ValueError(
            f"prediction_type='flow_prediction' needs a data-prediction algorithm_type (dpmsolver++ or "
            f"sde-dpmsolver++), got {algorithm!r}"
        )


class DPMSolverMultistepState(SolverState):
    """One multistep run: timesteps, sigmas, the model-output history and per-order step weights."""

    #: work in float32 and cast back (diffusers' multistep), or in the sample's dtype
    upcast: ClassVar[bool] = True
    #: the final step is first order when the run ends on σ = 0
    euler_on_zero: ClassVar[bool] = True

    def __init__(
        self,
        scheduler: Any,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        cfg = scheduler.config
        super().__init__(scheduler, timesteps, sigmas, num_inference_steps, device, history=cfg.solver_order)
        self._cfg = cfg
        alpha, sigma_t = scheduler.alpha_sigma(sigmas)
        self._alpha, self._sigma_t, self._lambda = alpha, sigma_t, half_log_snr(alpha, sigma_t)
        self._threshold = (cfg.dynamic_thresholding_ratio, cfg.sample_max_value) if cfg.thresholding else None
        algorithm = cfg.get("algorithm_type")
        self._data, self._sde = algorithm in _DATA, algorithm in _SDE
        self._final_zero = bool(sigmas[-1] == 0) if sigmas.numel() else False
        self._tables: dict[int, list[Weights]] = {}

    @functools.cached_property
    def _scales(self) -> list[tuple[float, float, float]]:
        """Per point: (α, σ_t, k-diffusion σ) as Python floats."""
        return list(zip(self._alpha.tolist(), self._sigma_t.tolist(), self.sigmas.tolist(), strict=True))

    def _weights(self, order: int) -> list[Weights]:
        table = self._tables.get(order)
        if table is None:
            cfg = self._cfg
            table = multistep_weights(cfg.algorithm_type, cfg.solver_type, order, self._alpha, self._sigma_t, self._lambda)
            self._tables[order] = table
        return table

    def _order(self, i: int) -> int:
        cfg, n = self._cfg, len(self._host)
        few = cfg.lower_order_final and n < 15
        final = i == n - 1 and (cfg.euler_at_final or few or (self.euler_on_zero and self._final_zero))
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or final:
            return 1
        if cfg.solver_order == 2 or self.lower_order_nums < 2 or (i == n - 2 and few):
            return 2
        return 3

    def convert(self, model_output: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
        """The model output as the solver's history term: ``x0`` (``dpmsolver++``) or ``ε`` (``dpmsolver``)."""
        cfg = self._cfg
        alpha, sigma_t, sigma = self._scales[i]
        pt = cfg.prediction_type
        if pt == "epsilon" and cfg.variance_type in ("learned", "learned_range"):
            model_output = model_output[:, :3]
        if self._data:
            if pt == "flow_prediction":
                # x0 = x - σ·v
                return S.bound_x0(sub_scaled(sample, sigma, model_output), self._threshold, None)
            x0 = S.x0_from_prediction(model_output, sample, alpha, sigma_t, pt)
            return S.bound_x0(x0, self._threshold, None, inplace=x0 is not model_output)
        eps = S.eps_from_prediction(model_output, sample, alpha, sigma_t, pt)
        if self._threshold is not None:
            x0 = S.bound_x0(S.x0_from_prediction(eps, sample, alpha, sigma_t, "epsilon"), self._threshold, None)
            eps = S.eps_from_x0(x0, sample, alpha, sigma_t)
        return eps

    def _noise(
        self, like: torch.Tensor, generator: Any, variance_noise: torch.Tensor | None, dtype: torch.dtype
    ) -> torch.Tensor:
        if variance_noise is not None:
            return variance_noise.to(device=like.device, dtype=dtype)
        return randn_tensor(like.shape, generator=generator, device=like.device, dtype=dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One solver step ``x_i → x_{i+1}``; the SDE variants add noise from ``generator`` or ``variance_noise``."""
        i = self._start(timestep)
        order = self._order(i)
        m0 = self.convert(model_output, sample, i)
        self._push(m0)
        x = sample.to(torch.float32) if self.upcast else sample
        a, ws, s = self._weights(order)[i]
        history = self._history(order)
        if order == 2:
            terms = second_order_terms(ws, history[0], history[1], history[0])
        else:
            terms = list(zip(ws, history, strict=True))
        if self._sde:
            noise_dtype = torch.float32 if self.upcast else m0.dtype
            terms.append((s, self._noise(m0, generator, variance_noise, noise_dtype)))
        prev = combine(x, a, terms)
        if self.upcast:
            prev = prev.to(m0.dtype)
        self.lower_order_nums = min(self.lower_order_nums + 1, self._cfg.solver_order)
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``α·x0 + σ_t·ε`` at the sigmas of ``timesteps`` in this run (or at the begin/current step)."""
        sigma = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)[self._sigma_indices(timesteps)]
        alpha, sigma_t = self.scheduler.alpha_sigma(broadcast_to(sigma, original_samples.ndim))  # type: ignore[attr-defined]
        return alpha * original_samples + sigma_t * noise


class DPMSolverMultistepScheduler(VPSolverScheduler):
    """DPM-Solver (``dpmsolver``, ``sde-dpmsolver``) and DPM-Solver++ (``dpmsolver++``, ``sde-dpmsolver++``) multistep.

    Orders 1–3, ``solver_type`` midpoint/heun for the second order. The last step is first order
    when the run ends on σ = 0, with ``euler_at_final``, or with ``lower_order_final`` below 15
    steps (which also makes the second-to-last step at most second order). Where diffusers differs:

    * ``algorithm_type="deis"`` is read as ``dpmsolver++`` before the ``final_sigmas_type`` check,
      so DEIS configs swap in; diffusers rejects them with the default ``final_sigmas_type="zero"``.
    * With ``beta_schedule="squaredcos_cap_v2"`` and Karras sigmas the timesteps repeat (diffusers
      #12771). We keep diffusers' timesteps and sigmas, warn, and find a step's position from the
      element of ``timesteps`` it is, so that stepping through the run ends where it should;
      diffusers restarts at the second copy and fails with an IndexError on the last step.
    * ``sde-dpmsolver`` with ``solver_order=3``, ``flow_prediction`` with ``dpmsolver``, several sigma
      schedules at once, and ``mu`` without ``use_dynamic_shifting`` are rejected up front;
      diffusers fails (or silently picks one) later.
    * ``mu`` applies to the run it is given for; diffusers writes ``e^mu`` into ``config.flow_shift``,
      where it sticks for later runs.
    * A first timestep that is not in the run is an error; diffusers silently uses the last step.
    """

    config_class: ClassVar[type[Config]] = DPMSolverMultistepConfig
    order: ClassVar[int] = 1
    state_class: ClassVar[type[DPMSolverMultistepState]] = DPMSolverMultistepState

    config: DPMSolverMultistepConfig

    def _setup(self) -> None:
        if self.config.algorithm_type in ("dpmsolver", "sde-dpmsolver"):
            warnings.warn(
                f"algorithm_type {self.config.algorithm_type!r} is deprecated (as in diffusers, to be removed in "
                "1.0.0); choose 'dpmsolver++' or 'sde-dpmsolver++' instead",
                FutureWarning,
                stacklevel=4,
            )
        super()._setup()

    def _untimed_state(self) -> DPMSolverMultistepState:
        n = self.config.num_train_timesteps
        table = K.sigma_table(self.alphas_cumprod)
        return self.state_class(self, torch.arange(n - 1, -1, -1, dtype=torch.float32), table, None)

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        mu: float | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> DPMSolverMultistepState:
        """A fresh run of ``num_inference_steps`` steps, or over custom descending ``timesteps``."""
        cfg = self.config
        shift = shift_for(cfg, mu)
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        kind = "lu" if cfg.use_lu_lambdas else cfg.sigma_kind()
        if timesteps is not None:
            if kind is not None or cfg.use_flow_sigmas:
                raise ValueError(
                    f"custom timesteps cannot be used with use_{kind or 'flow'}_"
                    f"{'lambdas' if kind == 'lu' else 'sigmas'}=True: the sigma schedule sets the timesteps"
                )
            ts = S.check_timesteps(timesteps, cfg.num_train_timesteps).numpy()
            n = len(ts)
        else:
            n = int(num_inference_steps)  # type: ignore[arg-type]
            last = cfg.num_train_timesteps - clipped_timesteps(self.lambda_t, cfg.lambda_min_clipped)
            ts = solver_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset, last)
        if cfg.use_flow_sigmas:
            sigmas = flow_sigmas(cfg.num_train_timesteps, n + 1, shift)[:-1]
            ts = sigmas * cfg.num_train_timesteps
        else:
            ts, sigmas = k_sigma_plan(
                kind,
                self.alphas_cumprod,
                ts,
                n,
                sigma_min=cfg.get("sigma_min"),
                sigma_max=cfg.get("sigma_max"),
                round_timesteps=cfg.beta_schedule != "squaredcos_cap_v2",
            )
        sigmas = K.with_final_sigma(sigmas, K.final_sigma(self.alphas_cumprod, cfg.final_sigmas_type))
        return self._state_for(ts, sigmas, device)

    def _state_for(self, ts: np.ndarray, sigmas: np.ndarray, device: Any) -> DPMSolverMultistepState:
        timesteps = torch.from_numpy(np.ascontiguousarray(ts)).to(torch.int64)
        if has_duplicates(timesteps):
            logger.warning(
                "%s: the planned timesteps repeat (%s); steps are matched by position in state.timesteps "
                "(diffusers #12771)",
                type(self).__name__,
                timesteps.tolist(),
            )
        return self.state_class(self, timesteps, torch.from_numpy(sigmas), len(timesteps), device)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        mu: float | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """diffusers' ``set_timesteps``: a new default run."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device, mu=mu, timesteps=timesteps))

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
        state = self._state()
        return state.step(model_output, timestep, sample, generator, return_dict, variance_noise=variance_noise)  # type: ignore[call-arg]
