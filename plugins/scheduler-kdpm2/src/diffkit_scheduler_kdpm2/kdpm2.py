"""``KDPM2DiscreteScheduler``: k-diffusion's DPM-2 sampler (a midpoint method in log σ), with diffusers' numbers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_euler.base import SigmaScheduler, SigmaState, denoised, output, slope, v_factors

from .dpm2 import DPM2Config, base_schedule, interleave_timesteps, log_midpoint, midpoint_timesteps, pairs


class KDPM2State(SigmaState):
    """One DPM-2 run over interleaved sigmas; between the two stages of a step it holds the starting ``x``.

    First stage (even index ``i``): Euler from σ to the log-midpoint σ_mid of σ and σ_next.
    Second stage: the model at σ_mid gives the derivative for the whole step from the stored ``x``.
    """

    owner: ClassVar[str] = "KDPM2DiscreteScheduler"

    def __init__(self, *args: Any, sigmas_interpol: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sigmas_interpol = sigmas_interpol
        self._mid = sigmas_interpol.tolist()
        self._v = v_factors(self.sigmas)
        self._v_mid = v_factors(sigmas_interpol)
        self._mid_divisor = ((sigmas_interpol**2 + 1) ** 0.5).tolist()
        self._prediction_type = self.config.prediction_type
        self.sample: torch.Tensor | None = None

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next step is the first stage of a DPM-2 step."""
        return self.sample is None

    def _input_divisor_at(self, i: int) -> float:
        # the model sees x/√(σ²+1) at σ (first stage) or σ_mid (second stage)
        return self._input_divisor[i] if self.sample is None else self._mid_divisor[i]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
        *,
        generator: Any = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One stage of a DPM-2 step (``generator`` is accepted and unused: DPM-2 draws no noise).

        ``prediction_type="sample"`` works too; diffusers raises ``NotImplementedError`` for it.
        """
        i = self._start(timestep)
        first = self.sample is None
        if (first and i + 1 >= len(self._sigma)) or (not first and not 1 <= i < len(self._sigma)):
            raise self._past_end(i)
        pt = self._prediction_type
        if first:
            sigma, sigma_mid = self._sigma[i], self._mid[i + 1]
            x0 = denoised(model_output, sample, sigma, self._v[i], pt)
            dt = float(np.float32(sigma_mid) - np.float32(sigma))
            self.sample, start, at, v = sample, sample, sigma, self._v[i]
        else:
            sigma, sigma_mid, sigma_next = self._sigma[i - 1], self._mid[i], self._sigma[i]
            x0 = denoised(model_output, sample, sigma_mid, self._v_mid[i], pt)
            dt = float(np.float32(sigma_next) - np.float32(sigma))
            start, self.sample, at, v = self.sample, None, sigma_mid, self._v_mid[i]
        if first and pt == "v_prediction":
            # x_next = x + dt·(c1·x + c2·v) = (1 + dt·c1)·x + dt·c2·v, without cancelling x against dt·d
            prev = torch.mul(sample, 1 + dt * v[2]).add_(model_output, alpha=dt * v[3])
        else:
            # x_next = x_start + dt·d, d = (x - x0)/σ_eval
            prev = torch.add(start, slope(model_output, sample, x0, at, v, pt), alpha=dt)  # type: ignore[arg-type]
        self.step_index = i + 1
        return output(prev, x0, return_dict)


class KDPM2DiscreteScheduler(SigmaScheduler):
    """DPM-2 (k-diffusion ``sample_dpm_2``): order 2, the second evaluation at the log-midpoint of each step.

    ``timesteps`` interleaves each step's timestep with its midpoint's (``2N-1`` entries) and
    ``sigmas``/``sigmas_interpol`` are laid out to match, as in diffusers; Karras timesteps are
    rounded to integers and the timesteps are float64 whenever Karras, exponential or beta
    sigmas recompute them. Where diffusers differs: ``trailing`` always gives ``N`` timesteps;
    ``prediction_type="sample"`` is supported; the run starts at the position of the first
    timestep given (see :class:`~diffkit_scheduler_euler.base.SigmaState`).
    """

    config_class: ClassVar[type[Config]] = DPM2Config
    order: ClassVar[int] = 2

    config: DPM2Config

    def _initial_state(self) -> KDPM2State:
        n = self.config.num_train_timesteps
        return self.plan(n, None, n)

    def plan(
        self, num_inference_steps: int | None = None, device: Any = None, num_train_timesteps: int | None = None
    ) -> KDPM2State:
        """A fresh run of ``num_inference_steps`` steps (``num_train_timesteps`` overrides the spacing's range)."""
        if num_inference_steps is None:
            raise ValueError("KDPM2DiscreteScheduler.plan needs num_inference_steps")
        n = int(num_inference_steps)
        timesteps, sigmas = base_schedule(self, n, num_train_timesteps)
        # σ_mid,i = √(σ_i·σ_{i-1}): the midpoint of the step that ends at σ_i
        mids = log_midpoint(sigmas, sigmas.roll(1))
        steps = interleave_timesteps(timesteps, midpoint_timesteps(self, mids, timesteps.dtype)[1:-1])
        return KDPM2State(self, steps, pairs(sigmas), n, device, sigmas_interpol=pairs(mids))

    @property
    def state_in_first_order(self) -> bool:
        return self._state().state_in_first_order  # type: ignore[attr-defined]

    @property
    def sigmas_interpol(self) -> torch.Tensor:
        return self._state().sigmas_interpol  # type: ignore[attr-defined]

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``KDPM2DiscreteScheduler.step`` on the default run."""
        return self._state().step(model_output, timestep, sample, return_dict)
