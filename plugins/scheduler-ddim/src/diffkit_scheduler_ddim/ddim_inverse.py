"""``DDIMInverseScheduler``: deterministic DDIM run backwards (image → noise), with diffusers' numbers."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import BetaScheduleConfig, Scheduler, SchedulerState

logger = logging.getLogger("diffkit.scheduler.ddim_inverse")


class DDIMInverseConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``DDIMInverseScheduler``."""

    owner_name: ClassVar[str] = "DDIMInverseScheduler"

    clip_sample: bool = True
    set_alpha_to_one: bool = True
    steps_offset: NonNegativeInt = 0
    prediction_type: S.PredictionType = "epsilon"
    clip_sample_range: float = Field(1.0, gt=0)
    timestep_spacing: Literal["leading", "trailing"] = "leading"
    rescale_betas_zero_snr: bool = False

    @model_validator(mode="before")
    @classmethod
    def _deprecated_alpha_to_zero(cls, data: Any) -> Any:
        # diffusers reads the deprecated set_alpha_to_zero as the value of set_alpha_to_one
        if isinstance(data, dict) and data.get("set_alpha_to_zero") is not None:
            logger.warning("set_alpha_to_zero is deprecated; its value is used as set_alpha_to_one")
            rest = {k: v for k, v in data.items() if k != "set_alpha_to_zero"}
            return {**rest, "set_alpha_to_one": data["set_alpha_to_zero"]}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DDIMInverseConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        return self


def _step_table(scheduler: DDIMInverseScheduler, timesteps: torch.Tensor, stride: int) -> torch.Tensor:
    """Rows ``(√ᾱ_s, √(1-ᾱ_s), √ᾱ_t, √(1-ᾱ_t))`` for a step from ``s = t - stride`` up to ``t``."""
    ab = scheduler.alphas_cumprod
    source = torch.clamp(timesteps - stride, max=len(ab) - 1)
    ab_s = torch.where(source >= 0, ab[source.clamp(min=0)], scheduler.initial_alpha_cumprod)
    ab_t = ab[timesteps]
    return torch.stack([ab_s.sqrt(), (1 - ab_s).sqrt(), ab_t.sqrt(), (1 - ab_t).sqrt()])


class DDIMInverseState(SchedulerState):
    """One inversion run: ascending timesteps and the coefficients of each step, per working dtype."""

    def __init__(
        self,
        scheduler: DDIMInverseScheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        cfg = scheduler.config
        self._host: list[int] = timesteps.tolist()
        self._position = {t: i for i, t in enumerate(self._host)}
        self._stride = cfg.num_train_timesteps // num_inference_steps if num_inference_steps else 0
        self._table = _step_table(scheduler, timesteps, self._stride) if num_inference_steps else None
        self._rows: dict[torch.dtype, tuple[list[tuple[float, ...]], list[tuple[float, ...]]]] = {}
        self._prediction_type = cfg.prediction_type
        self._clip = cfg.clip_sample_range if cfg.clip_sample else None

    def _coefficients(self, t: int, i: int | None, dtype: torch.dtype) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(factors, divisors)`` of the step into ``t``: rounded to ``dtype`` where they multiply."""
        if i is None:
            n_train = self.config.num_train_timesteps
            if not 0 <= t < n_train:
                raise ValueError(f"timestep must lie in [0, {n_train}), got {t}")
            table = _step_table(self.scheduler, torch.tensor([t]), self._stride)  # type: ignore[arg-type]
            return S.scalar_rows(table, dtype)[0], S.scalar_rows(table)[0]
        rows = self._rows.get(dtype)
        if rows is None:
            rows = self._rows[dtype] = (S.scalar_rows(self._table, dtype), S.scalar_rows(self._table))  # type: ignore[arg-type]
        return rows[0][i], rows[1][i]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One inverted DDIM step ``x_s → x_t`` with ``s = t - T//N``: re-noise the ``x0`` estimate at ``t``.

        Below ``t = T//N`` the source is ``ᾱ = 1`` (``set_alpha_to_one``) or ``ᾱ_0``.
        """
        if self.num_inference_steps is None:
            raise ValueError("this DDIM inversion has no inference steps: call set_timesteps(n) or plan(n) first")
        t = S.timestep_value(timestep, self.timesteps, self._host)
        i = self._position.get(t)
        dtype = torch.promote_types(model_output.dtype, sample.dtype)
        (alpha, sigma, alpha_next, sigma_next), (alpha_div, sigma_div, _, _) = self._coefficients(t, i, dtype)
        pt = self._prediction_type
        if pt == "epsilon":
            # x0 = (x - √(1-ᾱ_s)·ε)/√ᾱ_s
            x0, eps = S.x0_from_prediction(model_output, sample, alpha_div, sigma, pt), model_output
        elif pt == "sample":
            # ε = (x - √ᾱ_s·x0)/√(1-ᾱ_s)
            x0, eps = model_output, S.eps_from_x0(model_output, sample, alpha, sigma_div)
        else:
            x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, pt)
            eps = S.eps_from_prediction(model_output, sample, alpha, sigma, pt)
        x0 = S.bound_x0(x0, None, self._clip, inplace=x0 is not model_output)
        # x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε
        prev = S.axpby_into(alpha_next, x0, sigma_next, eps, own_y=eps is not model_output)
        if i is not None:
            self.step_index = i + 1
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class DDIMInverseScheduler(Scheduler):
    """DDIM inversion (Mokady et al. 2022): walk a clean sample up to noise with the DDIM update.

    Timesteps ascend (``leading``: ``i·T//N + steps_offset``; ``trailing``: the DDIM trailing
    grid reversed); the step into ``t`` starts from ``t - T//N``. Where diffusers differs:
    ``trailing`` always yields ``num_inference_steps`` values (diffusers prepends a spurious
    ``-1`` for some counts, 61, 103, … with T=1000, which then indexes ``ᾱ`` from the end);
    ``leading`` with a ``steps_offset`` that passes ``T - 1`` raises ``ValueError`` in ``plan``;
    the deprecated ``set_alpha_to_zero`` is stored as ``set_alpha_to_one``, so the config says
    what the scheduler does.
    """

    config_class: ClassVar[type[Config]] = DDIMInverseConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: DDIMInverseConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    initial_alpha_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas)
        if cfg.rescale_betas_zero_snr:
            betas = S.rescale_zero_terminal_snr(betas)
        alphas_cumprod = S.alphas_cumprod(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        initial = torch.tensor(1.0) if cfg.set_alpha_to_one else alphas_cumprod[0].clone()
        object.__setattr__(self, "initial_alpha_cumprod", initial)
        chain = torch.arange(cfg.num_train_timesteps)
        object.__setattr__(self, "_legacy_state", DDIMInverseState(self, chain, None))

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> DDIMInverseState:
        """A fresh inversion run of ``num_inference_steps`` ascending steps."""
        if num_inference_steps is None:
            raise ValueError("DDIMInverseScheduler.plan needs num_inference_steps")
        cfg = self.config
        descending = S.spaced_timesteps(
            cfg.timestep_spacing, cfg.num_train_timesteps, num_inference_steps, cfg.steps_offset
        )
        return DDIMInverseState(self, descending.flip(0), num_inference_steps, device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``DDIMInverseScheduler.step``, argument order included, on the default state."""
        return self._state().step(model_output, timestep, sample, return_dict=return_dict)
