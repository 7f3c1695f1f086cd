"""``DDIMScheduler``: denoising diffusion implicit models, with the numbers of diffusers' scheduler."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler, SchedulerState


class DDIMConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``DDIMScheduler``."""

    owner_name: ClassVar[str] = "DDIMScheduler"

    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: NonNegativeInt = 0
    prediction_type: S.PredictionType = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1)
    clip_sample_range: float = Field(1.0, gt=0)
    sample_max_value: float = Field(1.0, gt=0)
    timestep_spacing: S.Spacing = "leading"
    rescale_betas_zero_snr: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> DDIMConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        return self


#: one step: (√ᾱ_t, √(1-ᾱ_t), √ᾱ_prev, σ_t, d_t), the noise scale σ_t and ε-weight d_t for one eta
_Step = tuple[float, float, float, float, float]


def _step_table(scheduler: DDIMScheduler, timesteps: torch.Tensor, stride: int, eta: float) -> list[_Step]:
    """Per-timestep coefficients in float32, for a step from ``t`` to ``t - stride``."""
    ab = scheduler.alphas_cumprod
    prev = timesteps - stride
    ab_t = ab[timesteps]
    ab_prev = torch.where(prev >= 0, ab[prev.clamp(min=0)], scheduler.final_alpha_cumprod)
    std, direction = S.ddim_noise_terms(eta, S.posterior_variance(ab_t, ab_prev) ** 0.5, ab_prev)
    columns = (ab_t.sqrt(), (1 - ab_t).sqrt(), ab_prev.sqrt(), std, direction)
    return list(zip(*(c.tolist() for c in columns), strict=True))


class DDIMState(SchedulerState):
    """One sampling run: its timesteps and, per ``eta`` used, the coefficients of each step."""

    def __init__(
        self,
        scheduler: DDIMScheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        cfg = scheduler.config
        self._cpu_timesteps = timesteps
        self._stride = cfg.num_train_timesteps // num_inference_steps if num_inference_steps else 0
        self._tables: dict[float, list[_Step]] = {}
        self._prediction_type = cfg.prediction_type
        self._threshold = (cfg.dynamic_thresholding_ratio, cfg.sample_max_value) if cfg.thresholding else None
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None

    @functools.cached_property
    def _host(self) -> list[int]:
        return self._cpu_timesteps.tolist()

    @functools.cached_property
    def _position(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self._host)}

    def _coefficients(self, t: int, i: int | None, eta: float) -> _Step:
        if i is None:  # any t in [0, T) may be stepped from, as in diffusers
            n_train = self.scheduler.config.num_train_timesteps
            if not 0 <= t < n_train:
                raise ValueError(f"timestep must lie in [0, {n_train}), got {t}")
            return _step_table(self.scheduler, torch.tensor([t]), self._stride, eta)[0]  # type: ignore[arg-type]
        table = self._tables.get(eta)
        if table is None:
            table = self._tables[eta] = _step_table(self.scheduler, self._cpu_timesteps, self._stride, eta)  # type: ignore[arg-type]
        return table[i]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step ``x_t → x_{t - T//N}``.

        ``eta`` weights the fresh noise (0: deterministic DDIM, 1: DDPM-like); the noise comes
        from ``generator`` or is given as ``variance_noise``; with ``eta > 0`` passing both is an
        error. With ``use_clipped_model_output`` the noise estimate is recomputed from the
        clipped ``x0``.
        """
        if self.num_inference_steps is None:
            raise ValueError("this DDIM state has no inference steps: call set_timesteps(n) or plan(n) first")
        t = S.timestep_value(timestep, self.timesteps, self._host)
        i = self._position.get(t)
        alpha, sigma, alpha_prev, std, direction = self._coefficients(t, i, float(eta))
        pt = self._prediction_type

        x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, pt)
        eps = None if use_clipped_model_output else S.eps_from_prediction(model_output, sample, alpha, sigma, pt)
        x0 = S.bound_x0(x0, self._threshold, self._clip, inplace=x0 is not model_output)
        if eps is None:
            eps = S.eps_from_x0(x0, sample, alpha, sigma)

        # x_prev = √ᾱ_prev·x0 + d_t·ε (+ σ_t·z)
        prev = S.axpby(alpha_prev, x0, direction, eps)
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise to step, not both")
            if variance_noise is None:
                noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                ).mul_(std)
            else:
                noise = std * variance_noise
            prev = prev.add_(noise) if prev.dtype == noise.dtype and prev.shape == noise.shape else prev + noise

        if i is not None:
            self.step_index = i + 1
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class DDIMScheduler(Scheduler):
    """Denoising diffusion implicit models (Song et al. 2020).

    Faithful to diffusers, including its quirk: a step from ``t`` always lands on
    ``t - num_train_timesteps // num_inference_steps``, whatever ``timestep_spacing`` produced,
    so with ``linspace`` or ``trailing`` the step may not land on the next listed timestep
    (diffusers issue #12633). Below 0 it lands on ``ᾱ = 1`` (``set_alpha_to_one``) or ``ᾱ_0``.
    ``trailing`` spacing always yields ``num_inference_steps`` values, where diffusers appends a
    spurious ``-1`` for some step counts (61, 103, … with T=1000).
    """

    config_class: ClassVar[type[Config]] = DDIMConfig
    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    order: ClassVar[int] = 1

    config: DDIMConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(
            cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas
        )
        if cfg.rescale_betas_zero_snr:
            betas = S.rescale_zero_terminal_snr(betas)
        alphas_cumprod = S.alphas_cumprod(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        final = torch.tensor(1.0) if cfg.set_alpha_to_one else alphas_cumprod[0].clone()
        object.__setattr__(self, "final_alpha_cumprod", final)
        # before set_timesteps: diffusers lists every training timestep and refuses to step
        train_chain = torch.arange(cfg.num_train_timesteps - 1, -1, -1)
        object.__setattr__(self, "_legacy_state", DDIMState(self, train_chain, None))

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Any = None,
    ) -> DDIMState:
        """A fresh sampling state of ``num_inference_steps`` steps."""
        if timesteps is not None:
            raise ValueError(
                "DDIMScheduler does not take custom timesteps: its step is fixed to t - num_train_timesteps // "
                "num_inference_steps; use DDPMScheduler or another scheduler for custom timesteps"
            )
        if num_inference_steps is None:
            raise ValueError("DDIMScheduler.plan needs num_inference_steps")
        cfg = self.config
        ts = S.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, num_inference_steps, cfg.steps_offset)
        return DDIMState(self, ts, num_inference_steps, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | list[torch.Generator] | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``DDIMScheduler.step``, argument order included, on the default state."""
        return self._state().step(  # type: ignore[call-arg]
            model_output,
            timestep,
            sample,
            generator,
            return_dict,
            eta=eta,
            use_clipped_model_output=use_clipped_model_output,
            variance_noise=variance_noise,
        )

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return S.add_noise(self.alphas_cumprod, original_samples, noise, timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction training target."""
        return S.velocity(self.alphas_cumprod, sample, noise, timesteps)
