"""``DDPMScheduler``: ancestral sampling of Ho et al. 2020, with the numbers of diffusers' scheduler."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler, SchedulerState

_LEARNED = ("learned", "learned_range")


class DDPMConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``DDPMScheduler``."""

    owner_name: ClassVar[str] = "DDPMScheduler"

    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear"
    variance_type: S.VarianceType = "fixed_small"
    clip_sample: bool = True
    prediction_type: S.PredictionType = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1)
    clip_sample_range: float = Field(1.0, gt=0)
    sample_max_value: float = Field(1.0, gt=0)
    timestep_spacing: S.Spacing = "leading"
    steps_offset: NonNegativeInt = 0
    rescale_betas_zero_snr: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> DDPMConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        return self


#: one step: (√ᾱ_t, √(1-ᾱ_t), x0 weight, x_t weight, fixed-variance σ, ln β̃_t, ln β_t, t > 0)
_Step = tuple[float, float, float, float, float, float, float, bool]


def _step_table(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> list[_Step]:
    """Per-step coefficients in float32, each step going to the next listed timestep (the last to ᾱ=1)."""
    ab = scheduler.alphas_cumprod
    ab_t = ab[timesteps]
    ab_prev = torch.cat([ab[timesteps[1:]], torch.ones(1)])
    x0_coef, xt_coef = S.ddpm_posterior_coefficients(ab_t, ab_prev)
    variance_type = scheduler.config.variance_type
    zeros = torch.zeros_like(ab_t)
    std = zeros if variance_type in _LEARNED else S.ddpm_noise_std(ab_t, ab_prev, variance_type)
    min_log, max_log = S.ddpm_log_variance_bounds(ab_t, ab_prev) if variance_type == "learned_range" else (zeros, zeros)
    columns = (ab_t.sqrt(), (1 - ab_t).sqrt(), x0_coef, xt_coef, std, min_log, max_log, timesteps > 0)
    return list(zip(*(c.tolist() for c in columns), strict=True))


class DDPMState(SchedulerState):
    """One sampling run: its timesteps and the coefficients of each step (computed on first use)."""

    def __init__(
        self,
        scheduler: DDPMScheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        cfg = scheduler.config
        self._cpu_timesteps = timesteps
        self._prediction_type = cfg.prediction_type
        self._variance_type = cfg.variance_type
        self._threshold = (cfg.dynamic_thresholding_ratio, cfg.sample_max_value) if cfg.thresholding else None
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None

    @functools.cached_property
    def _host(self) -> list[int]:
        return self._cpu_timesteps.tolist()

    @functools.cached_property
    def _position(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self._host)}

    @functools.cached_property
    def _steps(self) -> list[_Step]:
        return _step_table(self.scheduler, self._cpu_timesteps)  # type: ignore[arg-type]

    def _index(self, timestep: Any) -> int:
        t = S.timestep_value(timestep, self.timesteps, self._host)
        try:
            return self._position[t]
        except KeyError:
            raise ValueError(f"timestep {t} is not one of this run's timesteps") from None

    def previous_timestep(self, timestep: Any) -> Any:
        """The timestep a step from ``timestep`` lands on, a 0-d tensor (``-1`` after the last).

        Before any plan (the whole training chain) it is ``timestep - 1``, of the type given, as in diffusers.
        """
        if self.num_inference_steps is None:
            return timestep - 1  # the whole training chain, in the type given
        return S.listed_after(self.timesteps, self._index(timestep))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step ``x_t → x_prev``; noise is drawn only when ``t > 0``.

        With ``variance_type`` ``learned``/``learned_range`` the model output carries twice the
        sample's channels, the second half predicting the variance.
        """
        i = self._index(timestep)
        alpha, sigma, x0_coef, xt_coef, std, min_log, max_log, noisy = self._steps[i]
        predicted_variance = None
        if self._variance_type in _LEARNED and model_output.shape[1] == 2 * sample.shape[1]:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)

        x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, self._prediction_type)
        x0 = S.bound_x0(x0, self._threshold, self._clip, inplace=x0 is not model_output)
        # μ̃ = c0·x0 + c1·x_t
        prev = S.axpby(x0_coef, x0, xt_coef, sample)

        if noisy:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
            )
            if self._variance_type in _LEARNED:
                if predicted_variance is None:
                    raise ValueError(
                        f"variance_type={self._variance_type!r} needs a model output with twice the sample's "
                        f"{sample.shape[1]} channels, got {model_output.shape[1]}"
                    )
                if self._variance_type == "learned":
                    noise = predicted_variance**0.5 * noise
                else:
                    noise = S.learned_range_std(predicted_variance, min_log, max_log) * noise
            else:
                noise = noise.mul_(std)
            # x_prev = μ̃ + σ·z
            prev = prev.add_(noise) if prev.dtype == noise.dtype and prev.shape == noise.shape else prev + noise

        self.step_index = i + 1
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class DDPMScheduler(Scheduler):
    """Denoising diffusion probabilistic models (Ho et al. 2020), ancestral sampling.

    ``plan(num_inference_steps)`` spaces the steps by ``timestep_spacing``; ``plan(timesteps=[...])``
    takes strictly descending custom timesteps; ``plan()`` walks all training timesteps. Each
    step goes to the next listed timestep. Where diffusers differs:

    * ``fixed_large_log`` uses ``σ = exp(½·ln β_t)``; diffusers takes the square root of the
      log-variance itself and returns NaN.
    * ``trailing`` spacing always yields ``num_inference_steps`` values; for some step counts
      (61, 103, … with T=1000) diffusers appends a spurious ``-1``.
    * out-of-range timesteps (``leading`` with ``steps_offset``, negative custom ones) raise
      ``ValueError`` in ``plan`` instead of failing, or wrapping around, inside ``step``.
    """

    config_class: ClassVar[type[Config]] = DDPMConfig
    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    order: ClassVar[int] = 1

    config: DDPMConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(
            cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas
        )
        if cfg.rescale_betas_zero_snr:
            betas = S.rescale_zero_terminal_snr(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", S.alphas_cumprod(betas))
        object.__setattr__(self, "_legacy_state", self.plan())

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> DDPMState:
        """A fresh sampling state; pass ``num_inference_steps`` or custom ``timesteps``, not both."""
        n_train = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both")
            ts = S.check_timesteps(timesteps, n_train)
            return DDPMState(self, ts, len(ts), device)
        if num_inference_steps is None:
            return DDPMState(self, torch.arange(n_train - 1, -1, -1), None, device)
        cfg = self.config
        ts = S.spaced_timesteps(cfg.timestep_spacing, n_train, num_inference_steps, cfg.steps_offset)
        return DDPMState(self, ts, num_inference_steps, device)

    def previous_timestep(self, timestep: Any) -> Any:
        """diffusers' ``previous_timestep``, on the timesteps of the last ``set_timesteps``."""
        return self._state().previous_timestep(timestep)  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return S.add_noise(self.alphas_cumprod, original_samples, noise, timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction training target."""
        return S.velocity(self.alphas_cumprod, sample, noise, timesteps)
