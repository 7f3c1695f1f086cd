"""``PNDMScheduler``: pseudo numerical methods for diffusion models (Liu et al. 2022), with the
numbers of diffusers' scheduler.

A run is a Runge-Kutta warm-up (PRK: three full steps, four model evaluations each) followed by
linear multistep steps (PLMS) that reuse the last four noise estimates. With
``skip_prk_steps`` the warm-up is replaced by one Euler step and one Heun-like correction, as
Stable Diffusion configs do. All of a run's history lives in its :class:`PNDMState`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, NamedTuple

import torch
from pydantic import NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler, SchedulerState

from .multistep import MAX_HISTORY, adams_bashforth

#: the number of timesteps the Runge-Kutta warm-up covers (and its order)
PNDM_ORDER = 4


class PNDMConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``PNDMScheduler``."""

    owner_name: ClassVar[str] = "PNDMScheduler"

    skip_prk_steps: bool = False
    set_alpha_to_one: bool = False
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    timestep_spacing: S.Spacing = "leading"
    steps_offset: NonNegativeInt = 0

    @model_validator(mode="after")
    def _consistent(self) -> PNDMConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        return self


def pndm_timesteps(ascending: list[int], num_train_timesteps: int, skip_prk_steps: bool) -> tuple[list[int], list[int]]:
    """The (PRK, PLMS) timesteps of a run over the ``ascending`` spaced timesteps.

    PRK visits each of the four largest timesteps' intervals at its start, twice at its
    midpoint and at its end; PLMS then walks the rest downwards. Without PRK the largest
    timestep is followed by the second largest twice (Euler step, then its correction).
    """
    n = len(ascending)
    if skip_prk_steps:
        return [], ascending[::-1][:1] + ascending[-2:-1] + ascending[:-1][::-1]
    if n < PNDM_ORDER:
        raise ValueError(
            f"PNDMScheduler with skip_prk_steps=False needs num_inference_steps >= {PNDM_ORDER} (its Runge-Kutta "
            f"warm-up spans the {PNDM_ORDER} largest timesteps), got {n}; use more steps or skip_prk_steps=True"
        )
    half = num_train_timesteps // n // 2
    a, b, c, d = ascending[-PNDM_ORDER:]
    # per RK step from s to r (d→c, c→b, b→a): s, r+h, r+h, r
    prk = [d, c + half, c + half, c, c, b + half, b + half, b, b, a + half, a + half, a]
    return prk, ascending[: -PNDM_ORDER + 1][::-1]


class PNDMCoefficients(NamedTuple):
    """Scalars of one transfer ``x_t → x_prev`` (float32 values)."""

    sample_coeff: float
    alpha_gap: float
    denominator: float
    sqrt_alpha: float
    sqrt_beta: float


def pndm_coefficients(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor) -> PNDMCoefficients:
    """The coefficients of PNDM's transfer (paper eq. 9) from ``ᾱ_t`` to ``ᾱ_prev`` (0-d float32)."""
    beta_t, beta_prev = 1 - alpha_bar_t, 1 - alpha_bar_prev
    # c_x = √(ᾱ_prev/ᾱ_t);  c_ε = (ᾱ_prev - ᾱ_t);  den = ᾱ_t·√(1-ᾱ_prev) + √(ᾱ_t·(1-ᾱ_t)·ᾱ_prev)
    sample_coeff = (alpha_bar_prev / alpha_bar_t) ** 0.5
    denominator = alpha_bar_t * beta_prev**0.5 + (alpha_bar_t * beta_t * alpha_bar_prev) ** 0.5
    values = (sample_coeff, alpha_bar_prev - alpha_bar_t, denominator, alpha_bar_t**0.5, beta_t**0.5)
    return PNDMCoefficients(*(float(v) for v in values))


def pndm_transfer(sample: torch.Tensor, eps: torch.Tensor, c: PNDMCoefficients) -> torch.Tensor:
    # x_prev = c_x·x - c_ε·ε/den
    return c.sample_coeff * sample - torch.mul(eps, c.alpha_gap).div_(c.denominator)


class PNDMState(SchedulerState):
    """One PNDM run: its timesteps, step counter and the history of noise estimates (``ets``)."""

    def __init__(
        self, scheduler: PNDMScheduler, prk: list[int], plms: list[int], num_inference_steps: int, device: Any = None
    ) -> None:
        timesteps = torch.tensor(prk + plms, dtype=torch.int64)
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        cfg = scheduler.config
        self._host = prk + plms
        self.prk_timesteps = torch.tensor(prk, dtype=torch.int64)
        self.plms_timesteps = torch.tensor(plms, dtype=torch.int64)
        self._prk = prk
        self._skip_prk = cfg.skip_prk_steps
        self._v_prediction = cfg.prediction_type == "v_prediction"
        self._stride = cfg.num_train_timesteps // num_inference_steps
        #: model calls so far (diffusers' ``counter``)
        self.counter = 0
        #: the last noise estimates, newest last (at most four)
        self.ets: list[torch.Tensor] = []
        #: the running Runge-Kutta combination, ``None`` between RK steps
        self.cur_model_output: torch.Tensor | None = None
        #: the sample an RK step (or the PLMS warm-up) started from
        self.cur_sample: torch.Tensor | None = None
        self._coefficients: dict[tuple[int, int], PNDMCoefficients] = {}

    def _transfer_coefficients(self, t: int, prev: int) -> PNDMCoefficients:
        found = self._coefficients.get((t, prev))
        if found is None:
            scheduler: PNDMScheduler = self.scheduler  # type: ignore[assignment]
            n_train = scheduler.config.num_train_timesteps
            if not 0 <= t < n_train or prev >= n_train:
                raise ValueError(f"PNDM step from timestep {t} to {prev}: timesteps must lie in [0, {n_train})")
            ab = scheduler.alphas_cumprod
            ab_prev = ab[prev] if prev >= 0 else scheduler.final_alpha_cumprod
            found = self._coefficients[(t, prev)] = pndm_coefficients(ab[t], ab_prev)
        return found

    def _prev_sample(self, sample: torch.Tensor, t: int, prev: int, model_output: torch.Tensor) -> torch.Tensor:
        c = self._transfer_coefficients(t, prev)
        eps = S.axpby(c.sqrt_alpha, model_output, c.sqrt_beta, sample) if self._v_prediction else model_output
        return pndm_transfer(sample, eps, c)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One model call's worth of sampling: a PRK sub-step during the warm-up, else a PLMS step."""
        if self.counter < len(self._prk) and not self._skip_prk:
            return self.step_prk(model_output, timestep, sample, return_dict)
        return self.step_plms(model_output, timestep, sample, return_dict)

    def step_prk(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """A Runge-Kutta sub-step: four calls make one step, weighted 1/6, 1/3, 1/3, 1/6."""
        t = S.timestep_value(timestep, self.timesteps, self._host)
        phase = self.counter % 4
        # odd sub-steps land where they start, even ones half an interval lower
        prev = t - (0 if self.counter % 2 else self._stride // 2)
        start = self._prk[self.counter // 4 * 4]
        if phase == 0:
            self.cur_model_output = torch.mul(model_output, 1 / 6)
            self.ets = [*self.ets[-(MAX_HISTORY - 1) :], model_output]
            self.cur_sample = sample
        elif phase in (1, 2):
            self.cur_model_output = self._running() + torch.mul(model_output, 1 / 3)
        else:
            model_output = self._running() + torch.mul(model_output, 1 / 6)
            self.cur_model_output = None
        base = self.cur_sample if self.cur_sample is not None else sample
        prev_sample = self._prev_sample(base, start, prev, model_output)
        self.counter += 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

    def _running(self) -> torch.Tensor:
        if self.cur_model_output is None:
            raise RuntimeError("PNDM Runge-Kutta sub-steps must start at the first of four (counter % 4 == 0)")
        return self.cur_model_output

    def step_plms(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """A linear multistep step from ``timestep`` down one stride, using up to four past estimates."""
        if not self._skip_prk and len(self.ets) < 3:
            raise ValueError(
                "PNDMScheduler.step_plms needs the 12 Runge-Kutta sub-steps of the warm-up first (skip_prk_steps=False); "
                "call step(), which runs them"
            )
        t = S.timestep_value(timestep, self.timesteps, self._host)
        prev = t - self._stride
        if self.counter == 1:
            # the correction of the first (Euler) step: redo it from its start with the mean estimate
            prev, t = t, t + self._stride
        else:
            self.ets = [*self.ets[-(MAX_HISTORY - 1) :], model_output]
        if len(self.ets) == 1 and self.counter == 0:
            self.cur_sample = sample
            eps = model_output
        elif len(self.ets) == 1 and self.counter == 1:
            # ε = (ε₁ + ε₀)/2
            eps = (model_output + self.ets[-1]) / 2
            sample, self.cur_sample = self._start_sample(), None
        else:
            eps = adams_bashforth(self.ets)
        prev_sample = self._prev_sample(sample, t, prev, eps)
        self.counter += 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

    def _start_sample(self) -> torch.Tensor:
        if self.cur_sample is None:
            raise RuntimeError("PNDM: the correction step has no starting sample")
        return self.cur_sample


class PNDMScheduler(Scheduler):
    """Pseudo numerical methods for diffusion models (Liu et al. 2022): PRK warm-up, then PLMS.

    ``state = scheduler.plan(n)`` lists ``n + 9`` model calls (PRK) or ``n + 1`` (with
    ``skip_prk_steps``); every listed timestep is one model call. Faithful to diffusers,
    including that PRK needs at least four inference steps and that steps are always
    ``num_train_timesteps // num_inference_steps`` apart whatever ``timestep_spacing`` gave.
    With ``v_prediction`` the history holds the raw model outputs, combined before they are
    converted to noise at the current timestep (diffusers' order, kept for parity).
    Where diffusers differs: ``trailing`` spacing always yields ``n`` base timesteps (diffusers
    may add a spurious ``-1``), and too few steps for PRK raise ``ValueError`` at ``plan``.
    """

    config_class: ClassVar[type[Config]] = PNDMConfig
    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    order: ClassVar[int] = 1
    pndm_order: ClassVar[int] = PNDM_ORDER

    config: PNDMConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(
            cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas
        )
        alphas_cumprod = S.alphas_cumprod(betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        final = torch.tensor(1.0) if cfg.set_alpha_to_one else alphas_cumprod[0].clone()
        object.__setattr__(self, "final_alpha_cumprod", final)

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> PNDMState:
        """A fresh sampling state of ``num_inference_steps`` steps."""
        if num_inference_steps is None:
            raise ValueError("PNDMScheduler.plan needs num_inference_steps")
        cfg = self.config
        spaced = S.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, num_inference_steps, cfg.steps_offset)
        prk, plms = pndm_timesteps(spaced.flip(0).tolist(), cfg.num_train_timesteps, cfg.skip_prk_steps)
        return PNDMState(self, prk, plms, num_inference_steps, device)

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``PNDMScheduler.step`` on the default state."""
        return self._state().step(model_output, timestep, sample, return_dict)

    def step_prk(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step_prk`` on the default state."""
        return self._state().step_prk(model_output, timestep, sample, return_dict)  # type: ignore[attr-defined]

    def step_plms(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step_plms`` on the default state."""
        return self._state().step_plms(model_output, timestep, sample, return_dict)  # type: ignore[attr-defined]

    @property
    def prk_timesteps(self) -> torch.Tensor:
        return self._state().prk_timesteps  # type: ignore[attr-defined]

    @property
    def plms_timesteps(self) -> torch.Tensor:
        return self._state().plms_timesteps  # type: ignore[attr-defined]

    @property
    def ets(self) -> list[torch.Tensor]:
        return self._state().ets  # type: ignore[attr-defined]

    @property
    def counter(self) -> int:
        return self._state().counter  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return S.add_noise(self.alphas_cumprod, original_samples, noise, timesteps)
