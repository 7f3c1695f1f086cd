"""What LCM and TCD share: their config fields, their timestep schedules and the run bookkeeping.

Both distil a DDPM-trained model into one that jumps from ``x_t`` straight to a clean estimate;
sampling walks a short subset of an ``original_inference_steps``-point skipping schedule
``τ_j = (j+1)·⌊T/N₀⌋ - 1`` and re-noises in between.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from diffkit import schedules as S
from diffkit.scheduler import BetaScheduleConfig, Scheduler, SchedulerState

logger = logging.getLogger("diffkit.scheduler.consistency")

#: σ_data of the consistency-model boundary condition
SIGMA_DATA = 0.5


class ConsistencyConfig(BetaScheduleConfig):
    """Fields and defaults shared by diffusers' ``LCMScheduler`` and ``TCDScheduler``."""

    owner_name: ClassVar[str] = "LCMScheduler"

    beta_start: float = Field(0.00085, ge=0, le=1)
    beta_end: float = Field(0.012, ge=0, le=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "scaled_linear"
    original_inference_steps: PositiveInt = 50
    clip_sample: bool = False
    clip_sample_range: float = Field(1.0, gt=0)
    set_alpha_to_one: bool = True
    steps_offset: NonNegativeInt = 0
    prediction_type: S.PredictionType = "epsilon"
    thresholding: bool = False
    dynamic_thresholding_ratio: float = Field(0.995, gt=0, le=1)
    sample_max_value: float = Field(1.0, gt=0)
    timestep_spacing: S.Spacing = "leading"
    timestep_scaling: float = Field(10.0, gt=0)
    rescale_betas_zero_snr: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ConsistencyConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        check_original_steps(self.original_inference_steps, self.num_train_timesteps)
        return self


def check_original_steps(original_steps: int, num_train_timesteps: int) -> None:
    if original_steps > num_train_timesteps:
        raise ValueError(
            f"original_inference_steps ({original_steps}) must not exceed num_train_timesteps ({num_train_timesteps}): "
            "the distillation schedule is a subset of the training timesteps"
        )


def training_tables(cfg: ConsistencyConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(betas, alphas_cumprod, final_alpha_cumprod)`` in float32."""
    betas = S.make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas)
    if cfg.rescale_betas_zero_snr:
        betas = S.rescale_zero_terminal_snr(betas)
    alphas_cumprod = S.alphas_cumprod(betas)
    final = torch.tensor(1.0) if cfg.set_alpha_to_one else alphas_cumprod[0].clone()
    return betas, alphas_cumprod, final


# -- schedules -------------------------------------------------------------------------------
def skipping_schedule(num_train_timesteps: int, original_steps: int, strength: float) -> torch.Tensor:
    # τ_j = (j+1)·⌊T/N₀⌋ - 1 for j < ⌊N₀·strength⌋, ascending
    k = num_train_timesteps // original_steps
    return torch.arange(1, int(original_steps * strength) + 1, dtype=torch.int64) * k - 1


def every_timestep(num_train_timesteps: int, strength: float) -> torch.Tensor:
    # τ_j = j for j < ⌊T·strength⌋, ascending
    return torch.arange(0, int(num_train_timesteps * strength), dtype=torch.int64)


def evenly_selected(origin: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``num_steps`` of the ascending ``origin`` timesteps, evenly spread, in descending order."""
    descending = origin.flip(0)
    # i_k = ⌊k·L/N⌋ for k < N
    picks = torch.floor(torch.arange(num_steps, dtype=torch.float64) * (len(descending) / num_steps))
    return descending[picks.to(torch.int64)]


def strength_tail(timesteps: torch.Tensor, strength: float) -> torch.Tensor:
    # keep the last min(⌊N·strength⌋, N) of N custom timesteps (img2img)
    n = len(timesteps)
    kept = min(int(n * strength), n)
    return timesteps[max(n - kept, 0) :]


def boundary_scalings(timesteps: torch.Tensor, timestep_scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency boundary condition ``(c_skip, c_out)`` at integer ``timesteps``, in float32."""
    scaled = timesteps * timestep_scaling
    # c_skip = σd²/((s·t)² + σd²);  c_out = s·t/√((s·t)² + σd²)
    c_skip = SIGMA_DATA**2 / (scaled**2 + SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + SIGMA_DATA**2) ** 0.5
    return c_skip, c_out


def check_strength(strength: float) -> None:
    if not 0 < strength <= 1:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")


def plan_timesteps(
    cfg: ConsistencyConfig,
    num_inference_steps: int | None,
    original_inference_steps: int | None,
    timesteps: Sequence[int] | torch.Tensor | None,
    strength: float,
    *,
    explicit_original_uses_every_timestep: bool = False,
) -> tuple[torch.Tensor, int]:
    """The descending int64 timesteps of a run and its ``num_inference_steps``.

    ``explicit_original_uses_every_timestep`` is TCD's rule: when ``original_inference_steps``
    is passed to ``set_timesteps`` the schedule is drawn from every training timestep.
    """
    if (num_inference_steps is None) == (timesteps is None):
        raise ValueError("pass exactly one of num_inference_steps or timesteps")
    check_strength(strength)
    n_train = cfg.num_train_timesteps
    original_steps = original_inference_steps if original_inference_steps is not None else cfg.original_inference_steps
    check_original_steps(original_steps, n_train)
    if original_inference_steps is not None and explicit_original_uses_every_timestep:
        origin = every_timestep(n_train, strength)
    else:
        origin = skipping_schedule(n_train, original_steps, strength)

    if timesteps is not None:
        custom = S.check_timesteps(timesteps, n_train)
        _warn_about_custom(custom, origin, strength, original_steps, n_train)
        kept = strength_tail(custom, strength)
        if len(kept) == 0:
            raise ValueError(f"strength={strength} keeps none of the {len(custom)} custom timesteps")
        return kept, len(custom)

    if num_inference_steps > n_train:  # type: ignore[operator]
        raise ValueError(f"num_inference_steps ({num_inference_steps}) must not exceed num_train_timesteps ({n_train})")
    if len(origin) // num_inference_steps < 1:  # type: ignore[operator]
        raise ValueError(
            f"original_inference_steps x strength ({original_steps} x {strength}) leaves {len(origin)} timesteps, fewer "
            f"than num_inference_steps ({num_inference_steps}); use fewer steps or a higher strength"
        )
    if num_inference_steps > original_steps:  # type: ignore[operator]
        raise ValueError(
            f"num_inference_steps ({num_inference_steps}) must not exceed original_inference_steps ({original_steps}): "
            "the run's timesteps are a subset of the distillation schedule"
        )
    return evenly_selected(origin, num_inference_steps), num_inference_steps  # type: ignore[arg-type]


def _warn_about_custom(
    custom: torch.Tensor, origin: torch.Tensor, strength: float, original_steps: int, n_train: int
) -> None:
    values = custom.tolist()
    if strength == 1.0 and values[0] != n_train - 1:
        logger.warning(
            "the custom timesteps start at %d, not at num_train_timesteps - 1 (%d); results may be unexpected",
            values[0],
            n_train - 1,
        )
    known = set(origin.tolist())
    foreign = [t for t in values[1:] if t not in known]
    if foreign:
        logger.warning("custom timesteps %s are not on the distillation schedule; results may be unexpected", foreign)
    if len(values) > original_steps:
        logger.warning(
            "%d custom timesteps exceed original_inference_steps (%d); results may be unexpected",
            len(values),
            original_steps,
        )


# -- the run ---------------------------------------------------------------------------------
class ConsistencyState(SchedulerState):
    """Bookkeeping of one LCM or TCD run: where the run is, and which timestep is being stepped.

    The last listed timestep is the final step of the run: it returns the clean estimate and
    draws no noise, also when ``strength`` shortened a custom schedule (diffusers keeps counting
    to the unshortened length there and re-noises the last sample).
    """

    def __init__(
        self,
        scheduler: Scheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        self._cpu_timesteps = timesteps
        self._host: list[int] = timesteps.tolist()
        self._position = {t: i for i, t in enumerate(self._host)}
        self._last = len(self._host) - 1

    def _current_index(self, timestep: Any) -> int:
        if self.num_inference_steps is None:
            raise ValueError(
                f"{type(self.scheduler).__name__} has no inference steps yet: call set_timesteps(n) or use plan(n)"
            )
        if self.step_index is None:
            if self.begin_index is not None:
                self.step_index = self.begin_index
            else:
                self.step_index = S.first_step_index(timestep, self.timesteps, self._host)
        if self.step_index > self._last:
            raise ValueError(f"all {len(self._host)} steps of this run have been taken; plan a new run")
        return self.step_index

    def _locate(self, timestep: Any) -> tuple[int, int | None]:
        """The value of ``timestep`` and its position in this run (``None`` when it is not listed)."""
        if isinstance(timestep, torch.Tensor):
            i = S.view_position(timestep, self.timesteps)
            if i is not None:
                return self._host[i], i
        value = S.timestep_value(timestep, self.timesteps, self._host)
        n_train = self.config.num_train_timesteps
        if not 0 <= value < n_train:
            raise ValueError(f"timestep must lie in [0, {n_train}), got {value}")
        return value, self._position.get(value)

    def previous_timestep(self, timestep: Any) -> Any:
        """The listed timestep after ``timestep``, a 0-d tensor (``-1`` after the last); ``t - 1`` before any plan."""
        value, i = self._locate(timestep)
        if self.num_inference_steps is None:
            return timestep - 1  # the whole training chain, in the type given
        if i is None:
            raise ValueError(f"timestep {value} is not one of this run's timesteps")
        return S.listed_after(self.timesteps, i)


class ConsistencyScheduler(Scheduler):
    """What LCM and TCD share: the training tables, the plan of a run, the diffusers-style surface.

    A subclass names its config, its run (``state_class``) and whether passing
    ``original_inference_steps`` draws the run from every training timestep (TCD's rule).
    """

    state_class: ClassVar[type[ConsistencyState]] = ConsistencyState
    explicit_original_uses_every_timestep: ClassVar[bool] = False
    order: ClassVar[int] = 1

    config: ConsistencyConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: torch.Tensor

    def _setup(self) -> None:
        betas, alphas_cumprod, final = training_tables(self.config)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        object.__setattr__(self, "final_alpha_cumprod", final)
        train_chain = torch.arange(self.config.num_train_timesteps - 1, -1, -1)
        object.__setattr__(self, "_legacy_state", self.state_class(self, train_chain, None))

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> ConsistencyState:
        """A fresh run of ``num_inference_steps`` steps, or over custom descending ``timesteps``."""
        ts, n = plan_timesteps(
            self.config, num_inference_steps, original_inference_steps, timesteps, strength,
            explicit_original_uses_every_timestep=self.explicit_original_uses_every_timestep,
        )
        return self.state_class(self, ts, n, device)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> None:
        """diffusers' ``set_timesteps``, argument order included, on the default state."""
        state = self.plan(num_inference_steps, device, original_inference_steps, timesteps, strength)
        object.__setattr__(self, "_legacy_state", state)

    def previous_timestep(self, timestep: Any) -> Any:
        """diffusers' ``previous_timestep`` on the timesteps of the last ``set_timesteps``."""
        return self._state().previous_timestep(timestep)  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return S.add_noise(self.alphas_cumprod, original_samples, noise, timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The v-prediction training target."""
        return S.velocity(self.alphas_cumprod, sample, noise, timesteps)


def step_dtype(model_output: torch.Tensor, sample: torch.Tensor) -> torch.dtype:
    return torch.promote_types(model_output.dtype, sample.dtype)


Rows = list[tuple[float, ...]]


def factor_and_divisor_rows(table: torch.Tensor, dtype: torch.dtype) -> tuple[Rows, Rows]:
    """Per-step rows of ``table`` as left factors (rounded to ``dtype``) and as divisors (float32).

    diffusers multiplies by 0-d float32 tensors on the left, which half tensors round first,
    and divides by them on the right, which they do not.
    """
    divisors = S.scalar_rows(table)
    factors = S.scalar_rows(table, dtype) if dtype in (torch.float16, torch.bfloat16) else divisors
    return factors, divisors
