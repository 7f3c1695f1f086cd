"""``UniPCMultistepScheduler``: unified predictor-corrector (Zhao et al. 2023), B(h) variants bh1/bh2."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, field_serializer, field_validator, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_dpmsolver.base import SolverConfig
from diffkit_scheduler_dpmsolver.multistep import DPMSolverMultistepScheduler, DPMSolverMultistepState
from diffkit_scheduler_dpmsolver.schedule import (
    exponential_time_shift,
    k_sigma_plan,
    linear_time_shift,
    solver_timesteps,
    stretch_to_terminal,
)
from diffkit_scheduler_dpmsolver.solver import combine, sub_scaled

#: one correction or prediction: (sample weight, weight of this step's output, history weights newest first)
UniWeights = tuple[float, float, tuple[float, ...]]


class UniPCMultistepConfig(SolverConfig):
    """Fields and defaults of diffusers' ``UniPCMultistepScheduler``."""

    owner_name: ClassVar[str] = "UniPCMultistepScheduler"

    solver_order: int = Field(2, ge=1)
    predict_x0: bool = True
    solver_type: Literal["bh1", "bh2"] = "bh2"
    disable_corrector: tuple[int, ...] = ()
    solver_p: Any = None
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    rescale_betas_zero_snr: bool = False
    use_dynamic_shifting: bool = False
    time_shift_type: Literal["exponential", "linear"] = "exponential"
    sigma_min: float | None = None
    sigma_max: float | None = None
    shift_terminal: float | None = None

    @field_validator("solver_type", mode="before")
    @classmethod
    def _remap_solver(cls, value: Any) -> Any:
        return "bh2" if value in ("midpoint", "heun", "logrho") else value

    @field_serializer("solver_p", when_used="json")
    def _no_scheduler_in_files(self, value: Any) -> None:
        return None

    @model_validator(mode="after")
    def _consistent(self) -> UniPCMultistepConfig:
        self.check_common(steps_offset=self.steps_offset)
        if self.shift_terminal is not None and not self.use_flow_sigmas:
            raise ValueError("shift_terminal is only used with use_flow_sigmas=True")
        if self.use_flow_sigmas and self.sigma_kind() in ("exponential", "beta"):
            raise ValueError(f"use_flow_sigmas cannot be combined with use_{self.sigma_kind()}_sigmas")
        if not self.predict_x0 and self.prediction_type == "flow_prediction":
            raise ValueError("prediction_type='flow_prediction' needs predict_x0=True")
        if not self.predict_x0 and self.final_sigmas_type == "zero":
            raise ValueError(
                "predict_x0=False cannot end on σ = 0 (the noise-prediction form divides by it): "
                "use final_sigmas_type='sigma_min' or predict_x0=True"
            )
        return self

    def flow_with_sigma_schedules(self) -> bool:
        return True


def _rks(lam: torch.Tensor, base: torch.Tensor, back: int, h: torch.Tensor, order: int) -> torch.Tensor:
    """``r_k = (λ_{base-k-back} - λ_base)/h`` for ``k = 1 … order-1``, then 1; rows reaching before 0 get placeholders."""
    cols = []
    for k in range(1, order):
        j = base - k - back
        r = (lam[j.clamp(min=0)] - lam[base]) / h
        cols.append(torch.where(j >= 0, r, torch.full_like(r, -float(k))))
    cols.append(torch.ones_like(h))
    return torch.stack(cols, dim=1)


def _phi_system(rks: torch.Tensor, hh: torch.Tensor, bh: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(R, b, hφ₁, B(h))`` of UniPC's order conditions: ``R_pk = r_k^(p-1)``, ``b_p = p!·hφ_{p+1}/B(h)``."""
    order = rks.shape[1]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if bh == "bh1" else torch.expm1(hh)
    rows, b, factorial = [], [], 1
    for p in range(1, order + 1):
        rows.append(torch.pow(rks, p - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= p + 1
        # hφ_{k+1} = hφ_k/h - 1/k!
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows, dim=1), torch.stack(b, dim=1), h_phi_1, b_h


def _solve(r: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.solve_ex(r, b.unsqueeze(-1))[0].squeeze(-1)


class UniPCMultistepState(DPMSolverMultistepState):
    """One UniPC run: history, the last sample for the corrector, per-order predictor/corrector weights."""

    upcast: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_sample: torch.Tensor | None = None
        self.this_order = 1
        self.timestep_list: list[Any] = [None] * self._cfg.solver_order
        self._predictor: Any = None
        self._corrector_tables: dict[int, list[UniWeights]] = {}
        self._predictor_tables: dict[int, list[UniWeights]] = {}

    def _uni_table(self, order: int, corrector: bool) -> list[UniWeights]:
        tables = self._corrector_tables if corrector else self._predictor_tables
        if order in tables:
            return tables[order]
        cfg, lam, alpha, sigma_t = self._cfg, self._lambda, self._alpha, self._sigma_t
        n = lam.shape[0] - 1
        # the predictor goes i → i+1 from the history at i; the corrector redoes i-1 → i with the output at i
        t = torch.arange(n) if corrector else torch.arange(1, n + 1)
        s0 = (t - 1).clamp(min=0)
        h = lam[t] - lam[s0]
        rks = _rks(lam, s0, 0, h, order)
        hh = -h if cfg.predict_x0 else h
        r, b, h_phi_1, b_h = _phi_system(rks, hh, cfg.solver_type)
        if corrector:
            rhos = torch.full((n, 1), 0.5) if order == 1 else _solve(r, b)
        elif order == 1:
            rhos = torch.zeros((n, 0))
        elif order == 2:
            rhos = torch.full((n, 1), 0.5)
        else:
            rhos = _solve(r[:, :-1, :-1], b[:, :-1])
        scale = alpha[t] if cfg.predict_x0 else sigma_t[t]
        a = sigma_t[t] / sigma_t[s0] if cfg.predict_x0 else alpha[t] / alpha[s0]
        c1, cb = (scale * h_phi_1).double(), (scale * b_h).double()
        rk, rho = rks.double(), rhos.double()
        # x_t = A·x_s0 - c1·m0 - cB·(Σ_k ρ_k·(m_k - m0)/r_k [+ ρ_last·(m_t - m0)])
        hist = [-cb.unsqueeze(1) * rho[:, : order - 1] / rk[:, : order - 1]] if order > 1 else []
        history = torch.cat(hist, dim=1) if hist else torch.zeros((n, 0), dtype=torch.float64)
        own = -cb * rho[:, -1] if corrector else torch.zeros_like(cb)
        w0 = -c1 - history.sum(dim=1) - own
        cols = [a.double().tolist(), own.tolist(), w0.tolist(), *(history[:, k].tolist() for k in range(order - 1))]
        table = [(r_[0], r_[1], tuple(r_[2:])) for r_ in zip(*cols, strict=True)]
        tables[order] = table
        return table

    def convert(self, model_output: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
        """``x0`` (``predict_x0``) or ``ε``."""
        alpha, sigma_t, sigma = self._scales[i]
        pt = self._cfg.prediction_type
        if not self._cfg.predict_x0:
            return S.eps_from_prediction(model_output, sample, alpha, sigma_t, pt)
        if pt == "flow_prediction":
            x0 = sub_scaled(sample, sigma, model_output)
        else:
            x0 = S.x0_from_prediction(model_output, sample, alpha, sigma_t, pt)
        return S.bound_x0(x0, self._threshold, None)

    def _apply(self, w: UniWeights, sample: torch.Tensor, own: torch.Tensor | None, history: list[torch.Tensor]) -> torch.Tensor:
        a, w_own, ws = w
        terms = list(zip(ws, history, strict=True))
        if own is not None:
            terms.append((w_own, own))
        return combine(sample, a, terms).to(sample.dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Correct the sample with this output (UniC), then predict the next one (UniP)."""
        cfg = self._cfg
        i = self._start(timestep)
        n = len(self._host)
        m = self.convert(model_output, sample, i)
        if i > 0 and (i - 1) not in cfg.disable_corrector and self.last_sample is not None:
            w = self._uni_table(self.this_order, True)[i]
            sample = self._apply(w, self.last_sample, m, self._history(self.this_order))
        self._push(m)
        self.timestep_list = [*self.timestep_list[1:], timestep]
        order = min(cfg.solver_order, n - i) if cfg.lower_order_final else cfg.solver_order
        order = min(order, self.lower_order_nums + 1)
        if i == n - 1 and self._final_zero:
            order = 1
        self.this_order = order
        self.last_sample = sample
        if cfg.solver_p is not None:
            prev = self._solver_p().step(model_output, timestep, sample).prev_sample
        else:
            prev = self._apply(self._uni_table(order, False)[i], sample, None, self._history(order))
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def _solver_p(self) -> Any:
        if self._predictor is None:
            solver = self._cfg.solver_p
            if hasattr(solver, "plan"):
                self._predictor = solver.plan(len(self._host), device=self.timesteps.device)
            else:
                solver.set_timesteps(len(self._host), device=self.timesteps.device)
                self._predictor = solver
        return self._predictor


class UniPCMultistepScheduler(DPMSolverMultistepScheduler):
    """UniPC: a multistep predictor (UniP) and corrector (UniC) of any order, ``x0`` or ``ε`` form.

    ``disable_corrector`` lists the steps whose output is not used to correct; ``solver_p`` makes
    another scheduler the predictor. Where diffusers differs:

    * When a run ends on σ = 0 the last prediction is first order and is the ``x0`` estimate. With
      ``lower_order_final=False`` diffusers extrapolates to σ = 0 with ``h = ∞``, and with ``bh1``
      it multiplies ``B(h) = -∞`` by 0: both give NaN or ±inf on the last step.
    * ``predict_x0=False`` with ``final_sigmas_type="zero"`` is rejected (diffusers returns NaN).
    * ``mu`` and custom ``sigmas`` apply to their own run; custom sigmas may be any sequence.
    * ``solver_p`` is not written to config files (it is a scheduler object, not a setting).
    * Exponential or beta sigmas with flow sigmas, and ``flow_prediction`` with ``predict_x0=False``,
      are rejected at construction; a first timestep that is not in the run is an error.
    """

    config_class: ClassVar[type[Config]] = UniPCMultistepConfig
    state_class: ClassVar[type[DPMSolverMultistepState]] = UniPCMultistepState

    config: UniPCMultistepConfig  # type: ignore[assignment]

    def _setup(self) -> None:
        super(DPMSolverMultistepScheduler, self)._setup()

    def plan(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
        mu: float | None = None,
    ) -> DPMSolverMultistepState:
        """A fresh run of ``num_inference_steps`` steps, or over custom flow ``sigmas``."""
        cfg = self.config
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("use_dynamic_shifting=True needs mu: pass plan(..., mu=...)")
        custom = None
        if sigmas is not None:
            if not cfg.use_flow_sigmas:
                raise ValueError("custom sigmas need use_flow_sigmas=True")
            custom = np.asarray(sigmas, dtype=np.float64)
            num_inference_steps = len(custom)
        if num_inference_steps is None:
            raise ValueError("UniPCMultistepScheduler.plan needs num_inference_steps or sigmas")
        n, total = int(num_inference_steps), cfg.num_train_timesteps
        ts = solver_timesteps(cfg.timestep_spacing, total, n, cfg.steps_offset)
        kind = cfg.sigma_kind()
        zero = cfg.final_sigmas_type == "zero"
        if kind is not None:
            table = custom if custom is not None else K.sigma_table(self.alphas_cumprod).numpy()
            log_sigmas = K.log_sigma_table(table) if custom is None else np.log(table)
            sig = K.sigma_schedule(kind, np.asarray(table)[::-1], n, cfg.sigma_min, cfg.sigma_max)
            if kind == "karras" and cfg.use_flow_sigmas:
                # σ_flow = σ/(σ+1)
                sig = sig / (sig + 1)
                ts = sig * total
            else:
                ts = K.sigma_to_t(sig, log_sigmas)
                if kind == "karras":
                    ts = ts.round()
            out = K.with_final_sigma(sig, 0.0 if zero else float(sig[-1]))
        elif cfg.use_flow_sigmas:
            sig = custom if custom is not None else np.linspace(1, 1 / total, n + 1)[:-1]
            if cfg.use_dynamic_shifting:
                shift = exponential_time_shift if cfg.time_shift_type == "exponential" else linear_time_shift
                sig = shift(mu, sig)  # type: ignore[arg-type]
            else:
                # σ' = s·σ/(1 + (s-1)·σ)
                sig = cfg.flow_shift * sig / (1 + (cfg.flow_shift - 1) * sig)
            if cfg.shift_terminal:
                sig = stretch_to_terminal(sig, cfg.shift_terminal)
            sig = np.array(sig, dtype=np.float64)
            if math.fabs(sig[0] - 1) < 1e-6:
                sig[0] -= 1e-6
            ts = sig * total
            out = K.with_final_sigma(sig, 0.0 if zero else float(sig[-1]))
        else:
            ts, sig = k_sigma_plan(None, self.alphas_cumprod, ts, n)
            out = K.with_final_sigma(sig, K.final_sigma(self.alphas_cumprod, cfg.final_sigmas_type))
        return self._state_for(np.asarray(ts), out, device)

    def set_timesteps(  # type: ignore[override]
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
        mu: float | None = None,
    ) -> None:
        """diffusers' ``set_timesteps``: a new default run."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device, sigmas=sigmas, mu=mu))

    def step(  # type: ignore[override]
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return self._state().step(model_output, timestep, sample, None, return_dict)
