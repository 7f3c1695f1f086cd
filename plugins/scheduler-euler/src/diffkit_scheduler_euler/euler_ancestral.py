"""``EulerAncestralDiscreteScheduler``: k-diffusion's ancestral Euler sampler, with diffusers' numbers."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor

from .base import SigmaConfig, SigmaScheduler, SigmaState, denoised, output, reject_integer_timestep, v_factors


class EulerAncestralConfig(SigmaConfig):
    """Fields and defaults of diffusers' ``EulerAncestralDiscreteScheduler``."""

    owner_name: ClassVar[str] = "EulerAncestralDiscreteScheduler"

    rescale_betas_zero_snr: bool = False


def ancestral_sigmas(sigma_from: torch.Tensor, sigma_to: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(σ_up, σ_down)`` of an ancestral step ``σ_from → σ_to``: go deterministically to σ_down, add σ_up noise.

    When ``σ_to ≪ σ_from`` (σ_max of ``squaredcos_cap_v2`` is ~2·10⁴) ``√(σ_to² - σ_up²)`` cancels to
    0 or, through a slightly negative difference, NaN; there σ_down is the equal ``σ_to²/σ_from``.
    diffusers keeps the 0 or NaN: its ancestral Euler then returns NaN samples, and its ancestral
    DPM-2 plans a NaN timestep (the log-midpoint of σ and 0).
    """
    # σ_up = √(σ_to²·(σ_from² - σ_to²)/σ_from²)
    up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    # σ_down = √(σ_to² - σ_up²) (= σ_to²/σ_from)
    down = (sigma_to**2 - up**2) ** 0.5
    return up, torch.where(~(down > 0) & (sigma_to > 0), sigma_to**2 / sigma_from, down)


class EulerAncestralState(SigmaState):
    """One ancestral Euler run: per step σ, the step ``σ_down - σ`` and the noise scale σ_up (float32)."""

    owner: ClassVar[str] = "EulerAncestralDiscreteScheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sig = self.sigmas
        sigma, up_down = sig[:-1], ancestral_sigmas(sig[:-1], sig[1:])
        up, down = up_down
        self._steps = list(zip(sigma.tolist(), (down - sigma).tolist(), up.tolist(), v_factors(sigma), strict=True))
        self._prediction_type = self.config.prediction_type

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step: Euler from σ to σ_down, then fresh noise of scale σ_up (drawn every step).

        ``prediction_type="sample"`` works too (x0 is the model output); diffusers raises
        ``NotImplementedError`` for it.
        """
        reject_integer_timestep(timestep, self.owner)
        self._warn_unscaled()
        i = self._start(timestep)
        if i >= len(self._steps):
            raise self._past_end(i)
        sigma, dt, up, v = self._steps[i]
        x = sample.to(torch.float32)
        pt = self._prediction_type
        x0 = denoised(model_output, x, sigma, v, pt)
        if pt == "epsilon":
            # x_down = x + (σ_down - σ)·ε
            prev = torch.add(x, model_output, alpha=dt)
        elif pt == "v_prediction":
            # x_down = x + dt·(c1·x + c2·v) with d = (x - x0)/σ = c1·x + c2·v
            prev = torch.mul(x, 1 + dt * v[2]).add_(model_output, alpha=dt * v[3])
        else:
            # x_down = x + (x - x0)/σ·(σ_down - σ) = lerp(x, x0, -(σ_down - σ)/σ)
            prev = torch.lerp(x, x0.to(torch.float32), -dt / sigma)
        noise = randn_tensor(
            model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
        )
        # x_next = x_down + σ_up·z
        prev = prev.add_(noise, alpha=up)
        self.step_index = i + 1
        return output(prev.to(model_output.dtype), x0, return_dict)


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    """Ancestral Euler sampling (k-diffusion ``sample_euler_ancestral``) with η = 1.

    Timesteps follow ``timestep_spacing`` (``linspace`` keeps fractional values), σ is
    interpolated linearly in ``t`` and the run ends at σ = 0. With ``rescale_betas_zero_snr`` the
    last ``ᾱ`` is set to 2⁻²⁴ so that σ_max stays finite. Where diffusers differs: ``trailing``
    always gives ``N`` timesteps, ``prediction_type="sample"`` is supported, σ_down stays finite
    for very large σ ratios (see :func:`ancestral_sigmas`), and the run starts at the position of
    the first timestep given (see :class:`~diffkit_scheduler_euler.base.SigmaState`).
    """

    config_class: ClassVar[type[Config]] = EulerAncestralConfig
    order: ClassVar[int] = 1

    config: EulerAncestralConfig

    def _initial_state(self) -> EulerAncestralState:
        n = self.config.num_train_timesteps
        sigmas = torch.from_numpy(K.with_final_sigma(self._sigma_table.flip(0).numpy(), 0.0))
        timesteps = torch.from_numpy(np.linspace(0, n - 1, n)[::-1].copy())
        return EulerAncestralState(self, timesteps, sigmas, None)

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> EulerAncestralState:
        """A fresh run of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("EulerAncestralDiscreteScheduler.plan needs num_inference_steps")
        cfg = self.config
        n = int(num_inference_steps)
        ts = K.float_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
        sigmas = K.with_final_sigma(K.sigmas_at(ts, self._sigma_table), 0.0)
        return EulerAncestralState(self, torch.from_numpy(ts), torch.from_numpy(sigmas), n, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``EulerAncestralDiscreteScheduler.step`` on the default run."""
        return self._state().step(model_output, timestep, sample, generator, return_dict)  # type: ignore[call-arg]
