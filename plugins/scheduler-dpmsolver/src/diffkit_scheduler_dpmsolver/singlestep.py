"""``DPMSolverSinglestepScheduler``: single-step DPM-Solver(++) (Lu et al. 2022), orders 1–3."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import field_validator, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput

from .base import SolverConfig, shift_for
from .multistep import (
    DPMSolverMultistepScheduler,
    DPMSolverMultistepState,
    check_algorithm,
    remap_algorithm,
    remap_solver_type,
)
from .schedule import clipped_timesteps, flow_sigmas, k_sigma_plan, solver_timesteps
from .solver import Weights, combine, second_order_terms, singlestep_weights


class DPMSolverSinglestepConfig(SolverConfig):
    """Fields and defaults of diffusers' ``DPMSolverSinglestepScheduler``."""

    owner_name: ClassVar[str] = "DPMSolverSinglestepScheduler"

    algorithm_type: Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver++"] = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    lower_order_final: bool = False
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    lambda_min_clipped: float = -float("inf")
    variance_type: Literal["learned", "learned_range"] | None = None
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
    def _consistent(self) -> DPMSolverSinglestepConfig:
        self.check_common()
        check_algorithm(self)
        return self


def order_list(num_steps: int, solver_order: int, lower_order_final: bool, final_zero: bool) -> list[int]:
    """The order of each step: repeating stages ``1, 2, …, solver_order``, ending low with ``lower_order_final``."""
    stage = list(range(1, solver_order + 1))
    full, rest = divmod(num_steps, solver_order)
    if not lower_order_final:
        orders = stage * full
    elif rest == 0:
        # the last stage is cut one short and closed by a first-order step
        orders = stage * (full - 1) + stage[:-1] + [1] if solver_order > 1 else [1] * num_steps
    else:
        orders = stage * full + stage[:rest]
    if final_zero and orders:
        orders[-1] = 1
    return orders


class DPMSolverSinglestepState(DPMSolverMultistepState):
    """One single-step run: stages of increasing order that restart from the sample at their start."""

    upcast: ClassVar[bool] = False

    def __init__(self, *args: Any, orders: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.orders = orders or []
        self.sample: torch.Tensor | None = None

    def _weights(self, order: int) -> list[Weights]:
        table = self._tables.get(order)
        if table is None:
            cfg = self._cfg
            table = singlestep_weights(
                cfg.algorithm_type, cfg.solver_type, order, self._alpha, self._sigma_t, self._lambda
            )
            self._tables[order] = table
        return table

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One step of the current stage; ``sde-dpmsolver++`` draws noise from ``generator`` every step."""
        i = self._start(timestep)
        m0 = self.convert(model_output, sample, i)
        self._push(m0)
        noise = self._noise(m0, generator, None, m0.dtype) if self._sde else None
        order = self.orders[i]
        while self.model_outputs[-order] is None:
            order -= 1
        if order == 1:
            self.sample = sample
        a, ws, s = self._weights(order)[i]
        history = self._history(order)
        if order == 2:
            terms = second_order_terms(ws, history[0], history[1], history[1])
        else:
            terms = list(zip(ws, history, strict=True))
        if noise is not None:
            terms.append((s, noise))
        prev = combine(self.sample, a, terms)  # type: ignore[arg-type]
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)


class DPMSolverSinglestepScheduler(DPMSolverMultistepScheduler):
    """Single-step DPM-Solver (``dpmsolver``) and DPM-Solver++ (``dpmsolver++``, ``sde-dpmsolver++``).

    Each stage of ``k`` steps restarts from the sample at its first step and uses the model
    outputs of the stage. Where diffusers differs:

    * With an uneven number of steps, or ``final_sigmas_type="zero"``, a run ends on lower-order
      stages as ``lower_order_final=True`` would; diffusers also writes ``lower_order_final=True``
      into the config, where it sticks for later runs. Ours leaves the config alone.
    * ``dpmsolver`` with ``thresholding`` converts at the step's own σ; diffusers indexes its
      tables with ``None`` and fails on the shapes.
    * ``algorithm_type="deis"`` reads as ``dpmsolver++`` and invalid settings are rejected up front.
    """

    config_class: ClassVar[type[Config]] = DPMSolverSinglestepConfig
    state_class: ClassVar[type[DPMSolverMultistepState]] = DPMSolverSinglestepState

    config: DPMSolverSinglestepConfig  # type: ignore[assignment]

    def _setup(self) -> None:
        if self.config.algorithm_type == "dpmsolver":
            warnings.warn(
                "algorithm_type 'dpmsolver' is deprecated (as in diffusers, to be removed in 1.0.0); choose "
                "'dpmsolver++' or 'sde-dpmsolver++' instead",
                FutureWarning,
                stacklevel=4,
            )
        super(DPMSolverMultistepScheduler, self)._setup()

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
        kind = cfg.sigma_kind()
        if timesteps is not None:
            if kind is not None or cfg.use_flow_sigmas:
                raise ValueError(
                    f"custom timesteps cannot be used with use_{kind or 'flow'}_sigmas=True: the sigma schedule "
                    "sets the timesteps"
                )
            ts = S.check_timesteps(timesteps, cfg.num_train_timesteps).numpy()
        else:
            last = cfg.num_train_timesteps - clipped_timesteps(self.lambda_t, cfg.lambda_min_clipped)
            ts = solver_timesteps("linspace", cfg.num_train_timesteps, int(num_inference_steps), 0, last)  # type: ignore[arg-type]
        n = len(ts)
        if cfg.use_flow_sigmas:
            sigmas = flow_sigmas(cfg.num_train_timesteps, n + 1, shift)[:-1]
            ts = sigmas * cfg.num_train_timesteps
        else:
            ts, sigmas = k_sigma_plan(
                kind, self.alphas_cumprod, ts, n, sigma_min=cfg.get("sigma_min"), sigma_max=cfg.get("sigma_max")
            )
        sigmas = K.with_final_sigma(sigmas, K.final_sigma(self.alphas_cumprod, cfg.final_sigmas_type))
        state = self._state_for(ts, sigmas, device)
        final_zero = cfg.final_sigmas_type == "zero"
        lower_final = cfg.lower_order_final or n % cfg.solver_order != 0 or final_zero
        state.orders = order_list(n, cfg.solver_order, lower_final, final_zero)  # type: ignore[attr-defined]
        return state

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return self._state().step(model_output, timestep, sample, generator, return_dict)
