"""``LCMScheduler``: multistep latent-consistency sampling, with the numbers of diffusers' scheduler."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor

from ._consistency import (
    ConsistencyScheduler,
    ConsistencyConfig,
    ConsistencyState,
    Rows,
    boundary_scalings,
    factor_and_divisor_rows,
    step_dtype,
)


class LCMConfig(ConsistencyConfig):
    """Fields and defaults of diffusers' ``LCMScheduler``."""

    owner_name: ClassVar[str] = "LCMScheduler"


@dataclasses.dataclass
class LCMSchedulerOutput(BaseOutput):
    """``prev_sample``: the input of the next step; ``denoised``: the consistency estimate of ``x0``."""

    prev_sample: Any
    denoised: Any = None


def _at_timesteps(scheduler: LCMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Rows ``(√ᾱ_t, √(1-ᾱ_t), c_skip, c_out)`` for each of ``timesteps`` (a ``(4, n)`` float32 table)."""
    ab = scheduler.alphas_cumprod[timesteps]
    c_skip, c_out = boundary_scalings(timesteps, scheduler.config.timestep_scaling)
    return torch.stack([ab.sqrt(), (1 - ab).sqrt(), c_skip, c_out])


def _landing(scheduler: LCMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Rows ``(√ᾱ_prev, √(1-ᾱ_prev))`` of the timestep each step re-noises to: the next listed one."""
    prev = torch.cat([timesteps[1:], timesteps[-1:]])
    ab = torch.where(prev >= 0, scheduler.alphas_cumprod[prev.clamp(min=0)], scheduler.final_alpha_cumprod)
    return torch.stack([ab.sqrt(), (1 - ab).sqrt()])


class LCMState(ConsistencyState):
    """One LCM run: its timesteps and the coefficients of each step, per working dtype."""

    def __init__(
        self, scheduler: LCMScheduler, timesteps: torch.Tensor, num_inference_steps: int | None, device: Any = None
    ) -> None:
        super().__init__(scheduler, timesteps, num_inference_steps, device)
        cfg = scheduler.config
        self._table = torch.cat([_at_timesteps(scheduler, timesteps), _landing(scheduler, timesteps)])
        self._rows: dict[torch.dtype, tuple[Rows, Rows]] = {}
        self._prediction_type = cfg.prediction_type
        self._threshold = (cfg.dynamic_thresholding_ratio, cfg.sample_max_value) if cfg.thresholding else None
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None

    def _coefficients(self, dtype: torch.dtype) -> tuple[Rows, Rows]:
        rows = self._rows.get(dtype)
        if rows is None:
            rows = self._rows[dtype] = factor_and_divisor_rows(self._table, dtype)
        return rows

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> LCMSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One consistency step: ``x0`` from the model, the boundary-conditioned ``denoised``, re-noised.

        ``denoised = c_out·x0 + c_skip·x_t``; every step but the last re-noises it to the next
        listed timestep with fresh noise from ``generator``.
        """
        i = self._current_index(timestep)
        value, at = self._locate(timestep)
        dtype = step_dtype(model_output, sample)
        factors, divisors = self._coefficients(dtype)
        if at is None:
            off, off_div = factor_and_divisor_rows(_at_timesteps(self.scheduler, torch.tensor([value])), dtype)  # type: ignore[arg-type]
            (alpha, sigma, c_skip, c_out), alpha_div = off[0], off_div[0][0]
        else:
            (alpha, sigma, c_skip, c_out), alpha_div = factors[at][:4], divisors[at][0]

        pt = self._prediction_type
        x0 = S.x0_from_prediction(model_output, sample, alpha_div if pt == "epsilon" else alpha, sigma, pt)
        x0 = S.bound_x0(x0, self._threshold, self._clip, inplace=x0 is not model_output)
        # denoised = c_out·x0 + c_skip·x_t
        denoised = S.axpby_into(c_out, x0, c_skip, sample, own_x=x0 is not model_output)
        if i != self._last:
            alpha_prev, sigma_prev = factors[i][4:]
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=denoised.dtype)
            # x_prev = √ᾱ_prev·denoised + √(1-ᾱ_prev)·z
            prev = S.axpby_into(alpha_prev, denoised, sigma_prev, noise, own_y=True)
        else:
            prev = denoised
        self.step_index = i + 1
        if not return_dict:
            return prev, denoised
        return LCMSchedulerOutput(prev_sample=prev, denoised=denoised)


class LCMScheduler(ConsistencyScheduler):
    """Latent consistency models (Luo et al. 2023): few-step sampling of a distilled model.

    The run's timesteps are ``num_inference_steps`` evenly spread picks of the
    ``original_inference_steps``-point distillation schedule (cut to its first
    ``strength`` fraction for img2img), or custom ``timesteps``. ``timestep_spacing`` and
    ``steps_offset`` are kept for config compatibility and unused, as in diffusers.
    Where diffusers differs: with custom timesteps and ``strength < 1`` the last listed
    timestep is the final step here (no re-noising, no draw); negative custom timesteps and
    ``strength`` outside ``(0, 1]`` raise ``ValueError``.
    """

    config_class: ClassVar[type[Config]] = LCMConfig
    state_class = LCMState

    config: LCMConfig

    def get_scalings_for_boundary_condition_discrete(self, timestep: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out)`` at ``timestep``."""
        c_skip, c_out = boundary_scalings(torch.as_tensor(timestep), self.config.timestep_scaling)
        return c_skip, c_out
