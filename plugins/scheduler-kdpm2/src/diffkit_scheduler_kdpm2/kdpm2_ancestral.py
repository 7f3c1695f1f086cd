"""``KDPM2AncestralDiscreteScheduler``: k-diffusion's ancestral DPM-2 sampler, with diffusers' numbers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit_scheduler_euler.base import SigmaScheduler, SigmaState, denoised, output, slope, v_factors
from diffkit_scheduler_euler.euler_ancestral import ancestral_sigmas

from .dpm2 import DPM2Config, base_schedule, interleave_timesteps, log_midpoint, midpoint_timesteps, pairs


class KDPM2AncestralConfig(DPM2Config):
    """Fields and defaults of diffusers' ``KDPM2AncestralDiscreteScheduler``."""

    owner_name: ClassVar[str] = "KDPM2AncestralDiscreteScheduler"


class KDPM2AncestralState(SigmaState):
    """One ancestral DPM-2 run over interleaved sigmas; between the two stages it holds the starting ``x``.

    First stage: Euler from σ to σ_mid, the log-midpoint of σ and σ_down. Second stage: the model
    at σ_mid gives the derivative for the step from the stored ``x`` to σ_down, then noise of
    scale σ_up is added.
    """

    owner: ClassVar[str] = "KDPM2AncestralDiscreteScheduler"

    def __init__(
        self,
        *args: Any,
        sigmas_interpol: torch.Tensor,
        sigmas_up: torch.Tensor,
        sigmas_down: torch.Tensor,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.sigmas_interpol, self.sigmas_up, self.sigmas_down = sigmas_interpol, sigmas_up, sigmas_down
        self._mid, self._up, self._down = sigmas_interpol.tolist(), sigmas_up.tolist(), sigmas_down.tolist()
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
        return self._input_divisor[i] if self.sample is None else self._mid_divisor[i - 1]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One stage of an ancestral DPM-2 step; the second stage draws noise from ``generator``.

        ``prediction_type="sample"`` works too; diffusers raises ``NotImplementedError`` for it.
        """
        i = self._start(timestep)
        first = self.sample is None
        if i >= len(self._sigma) - 1 or (not first and i == 0):
            raise self._past_end(i)
        pt = self._prediction_type
        if first:
            sigma, sigma_mid = self._sigma[i], self._mid[i]
            x0 = denoised(model_output, sample, sigma, self._v[i], pt)
            dt = float(np.float32(sigma_mid) - np.float32(sigma))
            self.sample, start, at, v = sample, sample, sigma, self._v[i]
        else:
            sigma, sigma_mid, sigma_down = self._sigma[i - 1], self._mid[i - 1], self._down[i - 1]
            x0 = denoised(model_output, sample, sigma_mid, self._v_mid[i - 1], pt)
            dt = float(np.float32(sigma_down) - np.float32(sigma))
            start, self.sample, at, v = self.sample, None, sigma_mid, self._v_mid[i - 1]
        if first and pt == "v_prediction":
            # x_next = x + dt·(c1·x + c2·v) = (1 + dt·c1)·x + dt·c2·v, without cancelling x against dt·d
            prev = torch.mul(sample, 1 + dt * v[2]).add_(model_output, alpha=dt * v[3])
        else:
            # x_next = x_start + dt·d, d = (x - x0)/σ_eval
            prev = torch.add(start, slope(model_output, sample, x0, at, v, pt), alpha=dt)  # type: ignore[arg-type]
        if not first:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            # x_next ← x_next + σ_up·z
            prev = prev.add_(noise, alpha=self._up[i - 1])
        self.step_index = i + 1
        return output(prev, x0, return_dict)


class KDPM2AncestralDiscreteScheduler(SigmaScheduler):
    """Ancestral DPM-2 (k-diffusion ``sample_dpm_2_ancestral``): order 2, noise after each second stage.

    Each step goes from σ towards σ_down through the log-midpoint of σ and σ_down, then adds
    σ_up noise (σ_up, σ_down as in ancestral Euler); the last step is a plain Euler step to 0.
    Layout, timesteps and their dtypes follow diffusers (see ``KDPM2DiscreteScheduler``). Where
    diffusers differs: ``trailing`` always gives ``N`` timesteps; ``prediction_type="sample"`` is
    supported; the run starts at the position of the first timestep given (see
    :class:`~diffkit_scheduler_euler.base.SigmaState`).
    """

    config_class: ClassVar[type[Config]] = KDPM2AncestralConfig
    order: ClassVar[int] = 2

    config: KDPM2AncestralConfig

    def _initial_state(self) -> KDPM2AncestralState:
        n = self.config.num_train_timesteps
        return self.plan(n, None, n)

    def plan(
        self, num_inference_steps: int | None = None, device: Any = None, num_train_timesteps: int | None = None
    ) -> KDPM2AncestralState:
        """A fresh run of ``num_inference_steps`` steps (``num_train_timesteps`` overrides the spacing's range)."""
        if num_inference_steps is None:
            raise ValueError("KDPM2AncestralDiscreteScheduler.plan needs num_inference_steps")
        n = int(num_inference_steps)
        timesteps, sigmas = base_schedule(self, n, num_train_timesteps)
        following = torch.cat([sigmas[1:], sigmas.new_zeros(1)])
        up, down = ancestral_sigmas(sigmas, following)
        down[-1] = 0.0
        mids = log_midpoint(sigmas, down)
        mids[-2:] = 0.0
        steps = interleave_timesteps(timesteps, midpoint_timesteps(self, mids, timesteps.dtype)[:-2])
        return KDPM2AncestralState(
            self,
            steps,
            pairs(sigmas),
            n,
            device,
            sigmas_interpol=pairs(mids),
            sigmas_up=pairs(up),
            sigmas_down=pairs(down),
        )

    @property
    def state_in_first_order(self) -> bool:
        return self._state().state_in_first_order  # type: ignore[attr-defined]

    @property
    def sigmas_interpol(self) -> torch.Tensor:
        return self._state().sigmas_interpol  # type: ignore[attr-defined]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``KDPM2AncestralDiscreteScheduler.step`` on the default run."""
        return self._state().step(model_output, timestep, sample, generator, return_dict)
