"""``TCDScheduler``: trajectory consistency distillation sampling, with the numbers of diffusers' scheduler."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch
from pydantic import model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor

from ._consistency import (
    ConsistencyScheduler,
    ConsistencyConfig,
    ConsistencyState,
    Rows,
    factor_and_divisor_rows,
    step_dtype,
)

logger = logging.getLogger("diffkit.scheduler.tcd")


class TCDConfig(ConsistencyConfig):
    """Fields and defaults of diffusers' ``TCDScheduler`` (those of ``LCMScheduler``)."""

    owner_name: ClassVar[str] = "TCDScheduler"

    @model_validator(mode="after")
    def _warn_unused(self) -> TCDConfig:
        if self.thresholding or self.clip_sample:
            logger.warning(
                "TCDScheduler: thresholding=%s, clip_sample=%s are kept in the config but, as in diffusers, "
                "TCD sampling never thresholds or clips its x0 estimate",
                self.thresholding,
                self.clip_sample,
            )
        return self


@dataclasses.dataclass
class TCDSchedulerOutput(BaseOutput):
    """``prev_sample``: the input of the next step; ``pred_noised_sample``: the estimate at ``s``."""

    prev_sample: Any
    pred_noised_sample: Any = None


def check_eta(eta: float) -> None:
    if not 0 <= eta <= 1:
        raise ValueError(f"eta (TCD's gamma) must lie in [0, 1], got {eta}")


def _at_timesteps(scheduler: TCDScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Rows ``(√ᾱ_t, √(1-ᾱ_t))`` for each of ``timesteps``."""
    ab = scheduler.alphas_cumprod[timesteps]
    return torch.stack([ab.sqrt(), (1 - ab).sqrt()])


def _landing(scheduler: TCDScheduler, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
    """Rows ``(√ᾱ_s, √(1-ᾱ_s), √(ᾱ_prev/ᾱ_s), √(1-ᾱ_prev/ᾱ_s))`` per step, ``s = ⌊(1-η)·t_prev⌋``.

    ``t_prev`` is the next listed timestep, 0 after the last.
    """
    ab = scheduler.alphas_cumprod
    prev = torch.cat([timesteps[1:], torch.zeros(1, dtype=timesteps.dtype)])
    # s = ⌊(1-η)·t_prev⌋
    s = torch.floor((1 - eta) * prev).to(torch.int64)
    ab_prev = torch.where(prev >= 0, ab[prev.clamp(min=0)], scheduler.final_alpha_cumprod)
    ab_s = ab[s]
    ratio = ab_prev / ab_s
    return torch.stack([ab_s.sqrt(), (1 - ab_s).sqrt(), ratio.sqrt(), (1 - ratio).sqrt()])


class TCDState(ConsistencyState):
    """One TCD run: its timesteps and, per ``eta`` and working dtype, the coefficients of each step."""

    def __init__(
        self, scheduler: TCDScheduler, timesteps: torch.Tensor, num_inference_steps: int | None, device: Any = None
    ) -> None:
        super().__init__(scheduler, timesteps, num_inference_steps, device)
        self._at = _at_timesteps(scheduler, timesteps)
        self._rows: dict[tuple[float, torch.dtype], tuple[Rows, Rows]] = {}
        self._prediction_type = scheduler.config.prediction_type

    def _coefficients(self, eta: float, dtype: torch.dtype) -> tuple[Rows, Rows]:
        rows = self._rows.get((eta, dtype))
        if rows is None:
            table = torch.cat([self._at, _landing(self.scheduler, self._cpu_timesteps, eta)])  # type: ignore[arg-type]
            rows = self._rows[(eta, dtype)] = factor_and_divisor_rows(table, dtype)
        return rows

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        eta: float = 0.3,
    ) -> TCDSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One strategic stochastic sampling step ``x_t → x_s → x_prev``.

        ``eta`` is the paper's γ: ``s = ⌊(1-γ)·t_prev⌋``; 0 is deterministic, 1 jumps to the
        clean estimate and re-noises fully. Every step but the last re-noises from ``s`` to the
        next listed timestep when ``eta > 0``.
        """
        check_eta(eta)
        eta = float(eta)
        i = self._current_index(timestep)
        value, at = self._locate(timestep)
        dtype = step_dtype(model_output, sample)
        factors, divisors = self._coefficients(eta, dtype)
        if at is None:
            off, off_div = factor_and_divisor_rows(_at_timesteps(self.scheduler, torch.tensor([value])), dtype)  # type: ignore[arg-type]
            (alpha, sigma), (alpha_div, sigma_div) = off[0], off_div[0]
        else:
            (alpha, sigma), (alpha_div, sigma_div) = factors[at][:2], divisors[at][:2]
        alpha_s, sigma_s, keep, fresh = factors[i][2:]

        pt = self._prediction_type
        if pt == "epsilon":
            # x0 = (x - √(1-ᾱ_t)·ε)/√ᾱ_t
            x0, eps = S.x0_from_prediction(model_output, sample, alpha_div, sigma, pt), model_output
        elif pt == "sample":
            # ε = (x - √ᾱ_t·x0)/√(1-ᾱ_t)
            x0, eps = model_output, S.eps_from_x0(model_output, sample, alpha, sigma_div)
        else:
            x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, pt)
            eps = S.eps_from_prediction(model_output, sample, alpha, sigma, pt)
        # x_s = √ᾱ_s·x0 + √(1-ᾱ_s)·ε
        noised = S.axpby_into(alpha_s, x0, sigma_s, eps, own_x=x0 is not model_output, own_y=eps is not model_output)
        if eta > 0 and i != self._last:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=noised.dtype)
            # x_prev = √(ᾱ_prev/ᾱ_s)·x_s + √(1-ᾱ_prev/ᾱ_s)·z
            prev = S.axpby_into(keep, noised, fresh, noise, own_y=True)
        else:
            prev = noised
        self.step_index = i + 1
        if not return_dict:
            return prev, noised
        return TCDSchedulerOutput(prev_sample=prev, pred_noised_sample=noised)


class TCDScheduler(ConsistencyScheduler):
    """Trajectory consistency distillation (Zheng et al. 2024) with strategic stochastic sampling.

    Timesteps as :class:`~diffkit_scheduler_lcm.lcm.LCMScheduler`, except that passing
    ``original_inference_steps`` to ``plan``/``set_timesteps`` draws them from every training
    timestep (diffusers' rule). ``step(..., eta=γ)`` sets the stochasticity. As in diffusers the
    config's ``thresholding``/``clip_sample`` are accepted and ignored (a warning says so).
    Where diffusers differs: the last listed timestep never draws noise (diffusers draws, and
    multiplies it by 0, when ``strength`` shortened a custom schedule); ``eta`` outside
    ``[0, 1]`` raises ``ValueError`` instead of failing an assert.
    """

    config_class: ClassVar[type[Config]] = TCDConfig
    state_class = TCDState
    explicit_original_uses_every_timestep = True

    config: TCDConfig

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.3,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> TCDSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``TCDScheduler.step``, argument order included, on the default state."""
        return self._state().step(model_output, timestep, sample, generator, return_dict, eta=eta)  # type: ignore[call-arg]
