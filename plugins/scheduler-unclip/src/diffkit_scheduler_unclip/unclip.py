"""``UnCLIPScheduler``: the DDPM variant of unCLIP (Karlo, Kandinsky priors), with diffusers' numbers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState


class UnCLIPConfig(Config):
    """Fields and defaults of diffusers' ``UnCLIPScheduler``."""

    owner_name: ClassVar[str] = "UnCLIPScheduler"

    num_train_timesteps: PositiveInt = 1000
    variance_type: Literal["fixed_small_log", "learned_range"] = "fixed_small_log"
    clip_sample: bool = True
    clip_sample_range: float = Field(1.0, gt=0)
    prediction_type: Literal["epsilon", "sample"] = "epsilon"
    beta_schedule: Literal["squaredcos_cap_v2"] = "squaredcos_cap_v2"

    @model_validator(mode="after")
    def _enough_timesteps(self) -> UnCLIPConfig:
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {self.num_train_timesteps}")
        return self


#: one step (t → prev): (√ᾱ_t, √(1-ᾱ_t), x0 weight, x_t weight, fixed_small_log σ, ln β̃, ln β, t > 0)
_Step = tuple[float, float, float, float, float, float, float, bool]


def _pair_table(scheduler: UnCLIPScheduler, t: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """Per pair ``(t, prev)``: the coefficients of a step from ``t`` to ``prev`` (``ᾱ = 1`` below 0)."""
    ab_t = scheduler.alphas_cumprod[t]
    ab_prev = torch.where(prev >= 0, scheduler.alphas_cumprod[prev.clamp(min=0)], 1.0)
    beta_prod, beta_prod_prev = 1 - ab_t, 1 - ab_prev
    adjacent = prev == t - 1
    # β = β_t for adjacent steps, else 1 - ᾱ_t/ᾱ_prev;  α = 1 - β
    beta = torch.where(adjacent, scheduler.betas[t], 1 - ab_t / ab_prev)
    alpha = torch.where(adjacent, scheduler.alphas[t], 1 - beta)
    # μ̃ = √ᾱ_prev·β/(1-ᾱ_t)·x0 + √α·(1-ᾱ_prev)/(1-ᾱ_t)·x_t
    x0_coef = ab_prev**0.5 * beta / beta_prod
    xt_coef = alpha**0.5 * beta_prod_prev / beta_prod
    # β̃ = (1-ᾱ_prev)/(1-ᾱ_t)·β;  σ = exp(½·ln max(β̃, 1e-20))
    variance = beta_prod_prev / beta_prod * beta
    std = torch.exp(0.5 * torch.log(torch.clamp(variance, min=S.MIN_VARIANCE)))
    return torch.stack([ab_t.sqrt(), beta_prod.sqrt(), x0_coef, xt_coef, std, variance.log(), beta.log()])


class UnCLIPState(SchedulerState):
    """One run: its timesteps and the coefficients of its usual steps (to the next listed, or ``t - 1``)."""

    def __init__(
        self, scheduler: UnCLIPScheduler, timesteps: torch.Tensor, num_inference_steps: int | None, device: Any = None
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        cfg = scheduler.config
        self._host: list[int] = timesteps.tolist()
        starts = torch.cat([timesteps[:-1], timesteps])
        ends = torch.cat([timesteps[1:], timesteps - 1])
        self._pairs = list(zip(starts.tolist(), ends.tolist(), strict=True))
        self._table = _pair_table(scheduler, starts, ends)
        self._rows: dict[torch.dtype, dict[tuple[int, int], tuple[tuple[float, ...], tuple[float, ...]]]] = {}
        self._prediction_type = cfg.prediction_type
        self._variance_type = cfg.variance_type
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None

    def _coefficients(self, t: int, prev: int, dtype: torch.dtype) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(factors, values)`` of the step ``t → prev``: rounded to ``dtype`` where they multiply first."""
        rows = self._rows.get(dtype)
        if rows is None:
            factors, values = S.scalar_rows(self._table, dtype), S.scalar_rows(self._table)
            rows = self._rows[dtype] = dict(zip(self._pairs, zip(factors, values, strict=True), strict=True))
        pair = rows.get((t, prev))
        if pair is None:
            n_train = self.config.num_train_timesteps
            if not 0 <= t < n_train or prev >= n_train:
                raise ValueError(f"timestep and prev_timestep must lie below {n_train}, got {t} and {prev}")
            table = _pair_table(self.scheduler, torch.tensor([t]), torch.tensor([prev]))  # type: ignore[arg-type]
            pair = (S.scalar_rows(table, dtype)[0], S.scalar_rows(table)[0])
        return pair

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        prev_timestep: Any = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step ``x_t → x_prev`` (``prev_timestep``, default ``t - 1``); noise when ``t > 0``.

        With ``learned_range`` the model output may carry twice the sample's channels, the
        second half interpolating the log-variance between ``ln β̃`` and ``ln β``.
        """
        t = S.timestep_value(timestep, self.timesteps, self._host)
        prev = t - 1 if prev_timestep is None else S.timestep_value(prev_timestep, self.timesteps, self._host)
        predicted_variance = None
        if self._variance_type == "learned_range" and model_output.shape[1] == 2 * sample.shape[1]:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)
        dtype = torch.promote_types(model_output.dtype, sample.dtype)
        factors, values = self._coefficients(t, prev, dtype)
        _, sigma, x0_coef, xt_coef, std = factors[:5]
        alpha, _, _, _, _, min_log, max_log = values

        x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, self._prediction_type)
        x0 = S.bound_x0(x0, None, self._clip, inplace=x0 is not model_output)
        # μ̃ = c0·x0 + c1·x_t
        out = S.axpby(x0_coef, x0, xt_coef, sample)
        if t > 0:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
            if self._variance_type == "fixed_small_log":
                noise = noise.mul_(std)
            else:
                if predicted_variance is None:
                    raise ValueError(
                        f"variance_type='learned_range' needs a model output with twice the sample's "
                        f"{sample.shape[1]} channels, got {model_output.shape[1]}"
                    )
                frac = (predicted_variance + 1) / 2
                # σ = exp(½·(f·ln β + (1-f)·ln β̃)), f = (v+1)/2
                noise = (0.5 * (frac * max_log + (1 - frac) * min_log)).exp() * noise
            # x_prev = μ̃ + σ·z
            out = out.add_(noise) if out.dtype == noise.dtype and out.shape == noise.shape else out + noise
        else:
            out = out + 0
        if not return_dict:
            return out, x0
        return SchedulerOutput(prev_sample=out, pred_original_sample=x0)


class UnCLIPScheduler(Scheduler):
    """DDPM sampling as unCLIP uses it: ``squaredcos_cap_v2`` betas, evenly spaced steps, each
    step to a given ``prev_timestep`` (default ``t - 1``).

    ``plan(n)`` lists ``round(i·(T-1)/(n-1))`` descending (``n ≥ 2``). Where diffusers differs:
    ``n = 1`` and ``n > num_train_timesteps`` raise ``ValueError`` (diffusers divides by zero,
    or repeats timesteps); ``learned_range`` without the variance channels raises
    ``ValueError`` naming them.
    """

    config_class: ClassVar[type[Config]] = UnCLIPConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: UnCLIPConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def _setup(self) -> None:
        n_train = self.config.num_train_timesteps
        betas = S.make_betas("squaredcos_cap_v2", n_train)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", S.alphas_cumprod(betas))
        object.__setattr__(self, "one", torch.tensor(1.0))
        object.__setattr__(self, "_legacy_state", UnCLIPState(self, torch.arange(n_train - 1, -1, -1), None))

    @property
    def variance_type(self) -> str:
        return self.config.variance_type

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> UnCLIPState:
        """A fresh run of ``num_inference_steps`` evenly spaced timesteps from ``T - 1`` to 0."""
        n_train = self.config.num_train_timesteps
        if num_inference_steps is None or not 2 <= num_inference_steps <= n_train:
            raise ValueError(
                f"UnCLIPScheduler needs 2 <= num_inference_steps <= num_train_timesteps ({n_train}), "
                f"got {num_inference_steps}"
            )
        timesteps = S.linspace_timesteps(n_train, num_inference_steps)
        return UnCLIPState(self, timesteps, num_inference_steps, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        prev_timestep: Any = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``UnCLIPScheduler.step``, argument order included, on the default state."""
        return self._state().step(  # type: ignore[call-arg]
            model_output, timestep, sample, generator, return_dict, prev_timestep=prev_timestep
        )

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return S.add_noise(self.alphas_cumprod, original_samples, noise, timesteps)
