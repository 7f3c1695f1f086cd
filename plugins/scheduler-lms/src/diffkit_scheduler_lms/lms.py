"""``LMSDiscreteScheduler``: k-diffusion's linear multistep sampler in σ, with diffusers' numbers."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_euler.base import SigmaConfig, SigmaScheduler, SigmaState, denoised, output, slope, v_factors

#: the order diffusers' ``step`` uses by default
DEFAULT_ORDER = 4


class LMSConfig(SigmaConfig):
    """Fields and defaults of diffusers' ``LMSDiscreteScheduler``."""

    owner_name: ClassVar[str] = "LMSDiscreteScheduler"

    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False


def lms_coefficients(sigmas: np.ndarray, order: int) -> np.ndarray:
    """Adams–Bashforth weights in σ: row ``i`` holds ``∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ`` for ``j < order``.

    ``ℓ_j`` is the Lagrange basis polynomial on the nodes ``σ_i, σ_{i-1}, …, σ_{i-order+1}``
    (rows ``i < order-1`` lack nodes and hold NaN). The integrand has degree ``order-1``, so
    Gauss–Legendre with ``order`` points is exact; diffusers' adaptive ``scipy.integrate.quad``
    is exact on it too, up to its float32 evaluation of the integrand (≈1e-7 relative).
    """
    s = np.asarray(sigmas, dtype=np.float64)
    n = len(s) - 1
    lo, hi = s[:-1], s[1:]
    x, w = np.polynomial.legendre.leggauss(order)
    # τ_q = (σ_i + σ_{i+1})/2 + (σ_{i+1} - σ_i)/2·x_q on each interval
    tau = ((lo + hi) / 2)[:, None] + ((hi - lo) / 2)[:, None] * x[None, :]
    nodes = np.full((order, n), np.nan)
    for j in range(order):
        nodes[j, j:] = s[: n - j]
    weights = np.empty((n, order))
    with np.errstate(invalid="ignore"):
        for j in range(order):
            basis = np.ones_like(tau)
            for m in range(order):
                if m != j:
                    # ℓ_j(τ) = Π_{m≠j} (τ - s_m)/(s_j - s_m)
                    basis *= (tau - nodes[m][:, None]) / (nodes[j] - nodes[m])[:, None]
            # ∫ ℓ_j = (σ_{i+1} - σ_i)/2·Σ_q w_q·ℓ_j(τ_q)
            weights[:, j] = (hi - lo) / 2 * (basis @ w)
    return weights


class LMSState(SigmaState):
    """One LMS run: its sigmas, the derivative history and, per order, the weights of every step."""

    owner: ClassVar[str] = "LMSDiscreteScheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._v = v_factors(self.sigmas)
        self._prediction_type = self.config.prediction_type
        self.derivatives: list[torch.Tensor] = []
        self._weight_tables: dict[int, list[list[float]]] = {}

    def _weights(self, order: int) -> list[list[float]]:
        table = self._weight_tables.get(order)
        if table is None:
            table = self._weight_tables[order] = lms_coefficients(self.sigmas.numpy(), order).tolist()
        return table

    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        """diffusers' accessor: the weight of the derivative ``current_order`` steps back at step ``t``."""
        return self._weights(order)[t][current_order]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        order: int = DEFAULT_ORDER,
        return_dict: bool = True,
        *,
        generator: Any = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One linear multistep step over the last ``order`` derivatives (``generator`` is unused).

        The order in use is limited by the derivatives this run has gathered. diffusers limits it
        by the step index instead, so a run started mid-schedule (``set_begin_index``) or whose
        ``order`` grows pairs high-order weights with too few derivatives; in a run from the
        start with a fixed ``order`` both agree.
        """
        if not self._scaled:
            self._scaled = True
            warnings.warn(
                "LMSDiscreteScheduler: step was called without scale_model_input first; the model must see "
                "state.scale_model_input(x, t) to denoise correctly",
                stacklevel=2,
            )
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        i = self._start(timestep)
        if i + 1 >= len(self._sigma):
            raise self._past_end(i)
        sigma = self._sigma[i]
        pt = self._prediction_type
        x0 = denoised(model_output, sample, sigma, self._v[i], pt)
        d = slope(model_output, sample, x0, sigma, self._v[i], pt)
        d = d.clone() if d is model_output else d
        history = self.derivatives
        history.append(d)
        if len(history) > order:
            history.pop(0)
        k = min(order, len(history))
        weights = self._weights(k)[i]
        # x_next = x + Σ_j c_j·d_{-j}
        prev = torch.add(sample, history[-1], alpha=weights[0])
        for j in range(1, k):
            prev.add_(history[-1 - j], alpha=weights[j])
        self.step_index = i + 1
        return output(prev, x0, return_dict)


class LMSDiscreteScheduler(SigmaScheduler):
    """Linear multistep sampling in σ (k-diffusion ``sample_lms``), order 4 by default.

    Plans like diffusers' LMS: ``timestep_spacing`` (``linspace`` keeps fractional values), σ
    interpolated linearly in ``t``, optional Karras (between the schedule's own ends, as in
    diffusers), exponential or beta sigmas, final σ = 0. The weights integrate the Lagrange
    interpolant of the stored derivatives over each σ interval exactly (Gauss–Legendre) instead
    of calling ``scipy.integrate.quad`` every step; they are computed once per run and order.
    Where diffusers differs: ``trailing`` always gives ``N`` timesteps; the order is limited by
    the derivatives gathered (see :meth:`LMSState.step`); the run starts at the position of the
    first timestep given (see :class:`~diffkit_scheduler_euler.base.SigmaState`).
    """

    config_class: ClassVar[type[Config]] = LMSConfig
    order: ClassVar[int] = 1

    config: LMSConfig

    def _initial_state(self) -> LMSState:
        return self.plan(self.config.num_train_timesteps)

    def sigma_bounds_override(self, kind: str) -> tuple[float | None, float | None]:
        # diffusers' LMS takes the Karras bounds from the schedule itself, the others from the config
        return (None, None) if kind == "karras" else super().sigma_bounds_override(kind)

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> LMSState:
        """A fresh run of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("LMSDiscreteScheduler.plan needs num_inference_steps")
        cfg = self.config
        n = int(num_inference_steps)
        ts = K.float_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
        sig, ts = self.reschedule(K.sigmas_at(ts, self._sigma_table), ts, n)
        sigmas = torch.from_numpy(K.with_final_sigma(sig, 0.0))
        return LMSState(self, torch.from_numpy(np.asarray(ts, dtype=np.float32)), sigmas, n, device)

    @property
    def derivatives(self) -> list[torch.Tensor]:
        return self._state().derivatives  # type: ignore[attr-defined]

    def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
        return self._state().get_lms_coefficient(order, t, current_order)  # type: ignore[attr-defined]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        order: int = DEFAULT_ORDER,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``LMSDiscreteScheduler.step`` on the default run."""
        return self._state().step(model_output, timestep, sample, order, return_dict)
