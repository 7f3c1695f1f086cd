"""``DEISMultistepScheduler``: diffusion exponential integrator sampler (Zhang & Chen 2022), log-ρ variant."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import NonNegativeInt, field_validator, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_dpmsolver.base import SolverConfig, shift_for
from diffkit_scheduler_dpmsolver.multistep import DPMSolverMultistepScheduler, DPMSolverMultistepState
from diffkit_scheduler_dpmsolver.schedule import flow_sigmas, k_sigma_plan, solver_timesteps
from diffkit_scheduler_dpmsolver.solver import Weights, combine, exponential_terms, sub_scaled


class DEISMultistepConfig(SolverConfig):
    """Fields and defaults of diffusers' ``DEISMultistepScheduler``."""

    owner_name: ClassVar[str] = "DEISMultistepScheduler"

    algorithm_type: Literal["deis"] = "deis"
    solver_type: Literal["logrho"] = "logrho"
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0
    use_dynamic_shifting: bool = False
    time_shift_type: Literal["exponential"] = "exponential"

    @field_validator("algorithm_type", mode="before")
    @classmethod
    def _remap_algorithm(cls, value: Any) -> Any:
        return "deis" if value in ("dpmsolver", "dpmsolver++") else value

    @field_validator("solver_type", mode="before")
    @classmethod
    def _remap_solver(cls, value: Any) -> Any:
        return "logrho" if value in ("midpoint", "heun", "bh1", "bh2") else value

    @model_validator(mode="after")
    def _consistent(self) -> DEISMultistepConfig:
        self.check_common(steps_offset=self.steps_offset)
        return self


def log_rho_coefficients(order: int, rho: list[torch.Tensor]) -> list[torch.Tensor]:
    """The weights of ``ε`` at ``s0, s1, …`` in ``x_t/α_t = x_s0/α_s0 + Σ c_j·ε_j`` (``rho = [ρ_t, ρ_s0, ρ_s1, …]``, ρ = σ/α).

    Each is the integral of the Lagrange basis polynomial in ``ln ρ`` over ``[ρ_s0, ρ_t]``, float32,
    with numpy's float32 logarithm (the reference's, which differs from torch's in the last bit).
    """

    def log(v: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.log(v.numpy()))
    def ind2(t: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # ∫ ℓ(ln ρ) dρ with ℓ = (ln ρ - ln c)/(ln b - ln c): t·(ln t - ln c - 1)/(ln b - ln c)
        return t * (-log(c) + log(t) - 1) / (log(b) - log(c))

    if order == 2:
        return [
            ind2(rho[0], rho[1], rho[2]) - ind2(rho[1], rho[1], rho[2]),
            ind2(rho[0], rho[2], rho[1]) - ind2(rho[1], rho[2], rho[1]),
        ]

    def ind3(t: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        # ∫ (ln ρ - ln c)(ln ρ - ln d)/((ln b - ln c)(ln b - ln d)) dρ evaluated at ρ = t
        lt, lc, ld = log(t), log(c), log(d)
        numerator = t * (lc * (ld - lt + 1) - ld * lt + ld + lt**2 - 2 * lt + 2)
        return numerator / ((log(b) - lc) * (log(b) - ld))

    t, s0, s1, s2 = rho
    return [
        ind3(t, s0, s1, s2) - ind3(s0, s0, s1, s2),
        ind3(t, s1, s2, s0) - ind3(s0, s1, s2, s0),
        ind3(t, s2, s0, s1) - ind3(s0, s2, s0, s1),
    ]


class DEISMultistepState(DPMSolverMultistepState):
    """One DEIS run: the ε history and per-order step weights."""

    upcast: ClassVar[bool] = False
    euler_on_zero: ClassVar[bool] = False

    def _weights(self, order: int) -> list[Weights]:
        table = self._tables.get(order)
        if table is not None:
            return table
        alpha, sigma_t, lam = self._alpha, self._sigma_t, self._lambda
        n = lam.shape[0] - 1
        idx = [torch.arange(1, n + 1)] + [(torch.arange(n) - j).clamp(min=0) for j in range(3)]
        if order == 1:
            k = exponential_terms("dpmsolver", alpha[idx[0]], sigma_t[idx[0]], alpha[idx[1]], sigma_t[idx[1]], lam[idx[0]] - lam[idx[1]])
            # x_t = α_t/α_s·x - σ_t(e^h - 1)·ε
            cols = [k["A"].tolist(), k["K0"].tolist(), torch.zeros(n).tolist()]
        else:
            rho = [sigma_t[i] / alpha[i] for i in idx[: order + 1]]
            # x_t = α_t·(x/α_s0 + Σ c_j·ε_j): here (α_s0, c…, α_t)
            cols = [alpha[idx[1]].tolist(), *(c.tolist() for c in log_rho_coefficients(order, rho)), alpha[idx[0]].tolist()]
        table = [(r[0], tuple(r[1:-1]), r[-1]) for r in zip(*cols, strict=True)]
        self._tables[order] = table
        return table

    def _order(self, i: int) -> int:
        cfg, n = self._cfg, len(self._host)
        few = cfg.lower_order_final and n < 15
        if cfg.solver_order == 1 or self.lower_order_nums < 1 or (i == n - 1 and few):
            return 1
        if cfg.solver_order == 2 or self.lower_order_nums < 2 or (i == n - 2 and few):
            return 2
        return 3

    def convert(self, model_output: torch.Tensor, sample: torch.Tensor, i: int) -> torch.Tensor:
        """The noise estimate ``ε``, always through ``x0`` (and the thresholding) as in diffusers."""
        alpha, sigma_t, sigma = self._scales[i]
        pt = self._cfg.prediction_type
        if pt == "flow_prediction":
            x0 = sub_scaled(sample, sigma, model_output)
        else:
            x0 = S.x0_from_prediction(model_output, sample, alpha, sigma_t, pt)
        x0 = S.bound_x0(x0, self._threshold, None)
        # ε = (x - α·x0)/σ_t
        return S.eps_from_x0(x0, sample, alpha, sigma_t)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One DEIS step ``x_i → x_{i+1}`` (deterministic; ``generator`` is accepted and unused)."""
        i = self._start(timestep)
        order = self._order(i)
        eps = self.convert(model_output, sample, i)
        self._push(eps)
        first, ws, last = self._weights(order)[i]
        if order == 1:
            prev = combine(sample, first, [(ws[0], eps)])
        else:
            acc = sample / first
            for c, m in zip(ws, self._history(order), strict=True):
                acc = acc.add_(torch.mul(m, c)) if torch.result_type(acc, m) == acc.dtype else acc + c * m
            prev = acc.mul_(last)
        self.lower_order_nums = min(self.lower_order_nums + 1, self._cfg.solver_order)
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)


class DEISMultistepScheduler(DPMSolverMultistepScheduler):
    """DEIS multistep (``algorithm_type="deis"``, ``solver_type="logrho"``), orders 1–3.

    Polynomial extrapolation of ``ε`` in ``ln ρ`` (``ρ = σ/α``), integrated exactly. The run ends
    on σ at ``t = 0`` (or repeats the last sigma of a σ schedule). ``dpmsolver``/``dpmsolver++``
    and the DPM/UniPC solver types read as ``deis``/``logrho``, as in diffusers. Where diffusers
    differs: ``mu`` applies to its own run (diffusers writes it into ``config.flow_shift``), and a
    first timestep that is not in the run is an error (diffusers silently uses the last step).
    """

    config_class: ClassVar[type[Config]] = DEISMultistepConfig
    state_class: ClassVar[type[DPMSolverMultistepState]] = DEISMultistepState

    config: DEISMultistepConfig  # type: ignore[assignment]

    def _setup(self) -> None:
        super(DPMSolverMultistepScheduler, self)._setup()

    def plan(  # type: ignore[override]
        self, num_inference_steps: int | None = None, device: Any = None, mu: float | None = None
    ) -> DPMSolverMultistepState:
        """A fresh run of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("DEISMultistepScheduler.plan needs num_inference_steps")
        cfg, n = self.config, int(num_inference_steps)
        shift = shift_for(cfg, mu)
        ts = solver_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
        kind = cfg.sigma_kind()
        if cfg.use_flow_sigmas:
            sigmas = flow_sigmas(cfg.num_train_timesteps, n + 1, shift)[:-1]
            ts = sigmas * cfg.num_train_timesteps
            sigmas = K.with_final_sigma(sigmas, float(sigmas[-1]))
        elif kind is not None:
            ts, sigmas = k_sigma_plan(kind, self.alphas_cumprod, ts, n, sigma_min=cfg.get("sigma_min"), sigma_max=cfg.get("sigma_max"))
            sigmas = K.with_final_sigma(sigmas, float(sigmas[-1]))
        else:
            ts, sigmas = k_sigma_plan(None, self.alphas_cumprod, ts, n)
            sigmas = K.with_final_sigma(sigmas, K.final_sigma(self.alphas_cumprod, "sigma_min"))
        return self._state_for(np.asarray(ts), sigmas, device)

    def set_timesteps(  # type: ignore[override]
        self, num_inference_steps: int | None = None, device: Any = None, mu: float | None = None
    ) -> None:
        """diffusers' ``set_timesteps``: a new default run."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device, mu=mu))

    def step(  # type: ignore[override]
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return self._state().step(model_output, timestep, sample, None, return_dict)
