"""``EulerDiscreteScheduler``: k-diffusion's Euler sampler (Karras et al. 2022, Alg. 2), with diffusers' numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import model_validator

from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor

from .base import (
    SigmaConfig,
    SigmaScheduler,
    SigmaState,
    as_float_array,
    check_custom_sigmas,
    check_step_count,
    f32,
    output,
    reject_integer_timestep,
    v_factors,
)

#: the largest churn Karras et al. allow per step: γ ≤ √2 - 1
MAX_GAMMA = 2**0.5 - 1


class EulerConfig(SigmaConfig):
    """Fields and defaults of diffusers' ``EulerDiscreteScheduler``."""

    owner_name: ClassVar[str] = "EulerDiscreteScheduler"

    interpolation_type: Literal["linear", "log_linear"] = "linear"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    timestep_type: Literal["discrete", "continuous"] = "discrete"
    rescale_betas_zero_snr: bool = False
    final_sigmas_type: K.FinalSigmasType = "zero"

    @model_validator(mode="after")
    def _bounds(self) -> EulerConfig:
        lo, hi = self.sigma_min, self.sigma_max
        if lo is not None and lo < 0:
            raise ValueError(f"sigma_min must not be negative, got {lo}")
        if hi is not None and hi <= 0:
            raise ValueError(f"sigma_max must be positive, got {hi}")
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError(f"sigma_min ({lo}) must be smaller than sigma_max ({hi})")
        if self.use_exponential_sigmas and lo == 0:
            raise ValueError("use_exponential_sigmas=True needs sigma_min > 0 (it spaces sigmas in log σ)")
        return self


def continuous_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """Timesteps of ``timestep_type="continuous"``, one per sigma, float32."""
    # t = ¼·ln σ, taken one σ at a time as the reference does
    return torch.stack([0.25 * s.log() for s in sigmas]) if len(sigmas) else sigmas.clone()


def churned_sigma(sigma: float, num_sigmas: int, s_churn: float, s_tmin: float, s_tmax: float) -> tuple[float, float]:
    """``(σ̂, γ)`` of Karras et al.'s churn, σ̂ in float32.

    ``γ = min(s_churn/(num_sigmas-1), √2-1)`` when ``s_tmin ≤ σ ≤ s_tmax`` (compared in float32), else 0.
    """
    inside = f32(s_tmin) <= sigma <= f32(s_tmax)
    gamma = min(s_churn / (num_sigmas - 1), MAX_GAMMA) if inside else 0.0
    # σ̂ = σ·(1+γ)
    return float(np.float32(sigma) * np.float32(gamma + 1)), gamma


class EulerState(SigmaState):
    """One Euler run: ``N`` timesteps and ``N+1`` sigmas (the last is the final sigma)."""

    owner: ClassVar[str] = "EulerDiscreteScheduler"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._v = v_factors(self.sigmas)
        self._prediction_type = self.config.prediction_type

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One Euler step ``σ → σ_next``; with ``s_churn > 0`` noise first raises σ to ``σ̂`` (Karras' churn).

        Works in float32 and returns ``prev_sample`` in the model output's dtype.
        """
        reject_integer_timestep(timestep, self.owner)
        self._warn_unscaled()
        i = self._start(timestep)
        if i + 1 >= len(self._sigma):
            raise self._past_end(i)
        sigma, sigma_next = self._sigma[i], self._sigma[i + 1]
        x = sample.to(torch.float32)
        sigma_hat = sigma
        if s_churn != 0:
            sigma_hat, gamma = churned_sigma(sigma, len(self._sigma), s_churn, s_tmin, s_tmax)
            if gamma > 0:
                noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
                lift = float(np.sqrt(np.float32(sigma_hat) ** 2 - np.float32(sigma) ** 2))
                # x ← x + s_noise·√(σ̂² - σ²)·z
                x = torch.add(x, noise, alpha=s_noise * lift)
        dt = f32(sigma_next - sigma_hat)
        pt = self._prediction_type
        if pt == "epsilon":
            # x0 = x - σ̂·ε;  x_next = x + (σ_next - σ̂)·ε
            x0 = torch.add(x, model_output, alpha=-sigma_hat)
            prev = torch.add(x, model_output, alpha=dt)
        elif pt == "v_prediction":
            a, b, c1, c2 = self._v[i]
            # x0 = x/(σ²+1) - σ/√(σ²+1)·v (at σ, also under churn, as diffusers does)
            x0 = torch.div(x, b).add_(model_output, alpha=a)
            if sigma_hat != sigma:
                # d = (x - x0)/σ̂ = σ²/((σ²+1)·σ̂)·x + σ/(√(σ²+1)·σ̂)·v
                c1, c2 = sigma**2 / ((sigma**2 + 1) * sigma_hat), sigma / ((sigma**2 + 1) ** 0.5 * sigma_hat)
            # x_next = x + dt·d = (1 + dt·c1)·x + dt·c2·v
            prev = torch.mul(x, 1 + dt * c1).add_(model_output, alpha=dt * c2)
        elif pt == "sample":
            x0 = model_output
            # x_next = x + (x - x0)/σ̂·(σ_next - σ̂) = lerp(x, x0, -(σ_next - σ̂)/σ̂)
            prev = torch.lerp(x, x0.to(torch.float32), -dt / sigma_hat)
        else:
            raise ValueError(f"prediction_type {pt!r} is not supported; use epsilon, sample or v_prediction")
        self.step_index = i + 1
        return output(prev.to(model_output.dtype), x0, return_dict)


class EulerDiscreteScheduler(SigmaScheduler):
    """Euler sampling of the probability-flow ODE in σ (k-diffusion ``sample_euler``), with optional churn.

    Plans like diffusers: ``timestep_spacing`` picks the timesteps (``linspace`` keeps fractional
    values), σ is interpolated linearly in ``t`` (or ``log_linear`` from σ_max to σ_min over
    ``N+1`` points, which then also gives ``N+2`` sigmas, as in diffusers), Karras/exponential/beta
    sigmas replace them between ``sigma_min``/``sigma_max`` and the timesteps are mapped back by
    log-σ interpolation; ``final_sigmas_type`` appends 0 or σ at ``t=0``. With
    ``rescale_betas_zero_snr`` the last ``ᾱ`` is set to 2⁻²⁴ so that σ_max stays finite.
    ``timestep_type="continuous"`` with v-prediction gives timesteps ``¼·ln σ``.

    Where diffusers differs: ``trailing`` spacing always has ``N`` timesteps (diffusers appends a
    spurious ``-1`` for some ``N``); a run starts at the position of the first timestep it is
    given (see :class:`~diffkit_scheduler_euler.base.SigmaState`), so duplicate timesteps at the
    start (Karras sigmas above the training range) do not make it skip σ_max and then fail with
    an IndexError (diffusers #12771); ``leading`` spacing that would pass the last training
    timestep is refused in ``plan``.
    """

    config_class: ClassVar[type[Config]] = EulerConfig
    order: ClassVar[int] = 1

    config: EulerConfig

    def _continuous(self) -> bool:
        return self.config.timestep_type == "continuous" and self.config.prediction_type == "v_prediction"

    def _initial_state(self) -> EulerState:
        n = self.config.num_train_timesteps
        sigmas = torch.cat([self._sigma_table.flip(0), torch.zeros(1)])
        if self._continuous():
            timesteps = continuous_timesteps(sigmas[:-1])
        else:
            timesteps = torch.from_numpy(np.linspace(0, n - 1, n)[::-1].copy()).to(torch.float32)
        return EulerState(self, timesteps, sigmas, None)

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
    ) -> EulerState:
        """A fresh run: ``num_inference_steps``, custom descending ``timesteps``, or custom ``sigmas``.

        Custom ``sigmas`` end with the final sigma (``N+1`` values for ``N`` steps); their
        timesteps come from log-σ interpolation.
        """
        check_step_count(num_inference_steps, timesteps, sigmas)
        cfg = self.config
        if timesteps is not None:
            self.check_custom_timesteps(self.sigma_schedule_kind)
            if self._continuous():
                raise ValueError(
                    "custom timesteps cannot be combined with timestep_type='continuous' and "
                    "prediction_type='v_prediction' (the timesteps are ¼·ln σ there); pass sigmas instead"
                )
        if sigmas is not None:
            final = as_float_array(sigmas, "sigmas")
            check_custom_sigmas(final)
            n = len(final) - 1
            ts = K.sigma_to_t(final[:-1], self._log_sigmas)
        else:
            if timesteps is not None:
                ts = as_float_array(timesteps, "timesteps")
                n = len(ts)
            else:
                n = int(num_inference_steps)  # type: ignore[arg-type]
                ts = K.float_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
            if cfg.interpolation_type == "log_linear":
                sig = K.log_linear_sigmas(self._sigma_table, n + 1)
            else:
                sig = K.sigmas_at(ts, self._sigma_table)
            sig, ts = self.reschedule(sig, ts, n)
            final = K.with_final_sigma(sig, K.final_sigma(self.alphas_cumprod, cfg.final_sigmas_type))
        sigma_tensor = torch.from_numpy(final)
        if self._continuous():
            ts_tensor = continuous_timesteps(sigma_tensor[:-1])
        else:
            ts_tensor = torch.from_numpy(np.asarray(ts, dtype=np.float32))
        return EulerState(self, ts_tensor, sigma_tensor, n, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``EulerDiscreteScheduler.step``, argument order included, on the default run."""
        return self._state().step(  # type: ignore[call-arg]
            model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise, generator, return_dict
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction target at planned ``timesteps``, with ``ᾱ = 1/(σ²+1)`` of their sigmas.

        diffusers indexes ``alphas_cumprod`` with the *position* of each timestep in the run
        instead of the timestep, which gives the ``ᾱ`` of another noise level; this uses the
        noise level of the timestep itself (exact for fractional timesteps too).
        """
        reject_integer_timestep(timesteps, "EulerDiscreteScheduler.get_velocity")
        state = self._state()
        steps = torch.as_tensor(timesteps).reshape(-1)
        indices = [state.index_for_timestep(t) for t in steps]  # type: ignore[attr-defined]
        sigma = state.sigmas.to(torch.float64)[indices]  # type: ignore[attr-defined]
        shape = (-1, *([1] * (sample.ndim - 1)))
        # ᾱ = 1/(σ²+1);  v = √ᾱ·ε - √(1-ᾱ)·x0
        ab = (1 / (sigma**2 + 1)).to(device=sample.device, dtype=sample.dtype).reshape(shape)
        return ab**0.5 * noise - (1 - ab) ** 0.5 * sample
