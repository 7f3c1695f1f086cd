"""``CMStochasticIterativeScheduler``: one-step and multistep sampling of consistency models
(Song et al. 2023, Algorithm 1), with the numbers of diffusers' scheduler.

Noise levels follow the Karras ramp ``σ(r) = (σ_max^(1/ρ) + r·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ``
for ``r = t/(T-1)``, and the model is fed ``250·ln σ`` as its timestep. Each step denoises with
the boundary-condition scalings, then (except in one-step sampling) re-noises to the next
level. The tables are computed in float64 with the same scalar operations as the reference,
then the levels rounded to float32.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field, PositiveFloat, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState

logger = logging.getLogger("diffkit.scheduler")

Level = float | torch.Tensor


@dataclasses.dataclass
class CMStochasticIterativeSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next noise level (the final image after the last step)."""

    prev_sample: torch.Tensor


class CMStochasticIterativeConfig(Config):
    """Fields and defaults of diffusers' ``CMStochasticIterativeScheduler``."""

    owner_name: ClassVar[str] = "CMStochasticIterativeScheduler"

    num_train_timesteps: int = Field(40, ge=2)
    sigma_min: PositiveFloat = 0.002
    sigma_max: PositiveFloat = 80.0
    sigma_data: PositiveFloat = 0.5
    s_noise: float = Field(1.0, ge=0)
    rho: PositiveFloat = 7.0
    clip_denoised: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> CMStochasticIterativeConfig:
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})")
        return self


# -- pure schedule maths (Python floats: float64, as the reference's numpy) ----------------------
def karras_sigmas(ramp: Sequence[float], sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """Karras levels for ramp positions in [0, 1] (0 → σ_max, 1 → σ_min)."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    # σ(r) = (σ_max^(1/ρ) + r·(σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ
    return [(hi + r * (lo - hi)) ** rho for r in ramp]


def sigma_to_t(sigma: float) -> float:
    # t = 1000·¼·ln(σ + 1e-44)
    return 1000 * 0.25 * math.log(sigma + 1e-44)


def uniform_ramp(n: int) -> list[float]:
    """``n`` points from 0 to 1 (the last exactly 1), spaced as numpy's ``linspace``."""
    step = 1.0 / (n - 1)
    return [i * step for i in range(n - 1)] + [1.0]


def boundary_scalings(sigma: Level, sigma_min: float, sigma_data: float) -> tuple[Level, Level]:
    """``(c_skip, c_out)`` that make the model the identity at ``σ = σ_min``."""
    # c_skip = σ_d²/((σ - σ_min)² + σ_d²);  c_out = (σ - σ_min)·σ_d/√(σ² + σ_d²)
    c_skip = sigma_data**2 / ((sigma - sigma_min) ** 2 + sigma_data**2)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def edm_scalings(sigma: Level, sigma_data: float) -> tuple[Level, Level]:
    """``(c_skip, c_out)`` of EDM preconditioning (no boundary condition)."""
    # c_skip = σ_d²/(σ² + σ_d²);  c_out = σ·σ_d/√(σ² + σ_d²)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


@dataclasses.dataclass(frozen=True)
class StepTable:
    """Per-step scalars (values of the levels' dtype) for steps ``0 … n-1``."""

    input_scale: list[float]
    c_skip: list[float]
    c_out: list[float]
    noise_std: list[float]


def step_table(sigmas: torch.Tensor, num_steps: int, config: CMStochasticIterativeConfig) -> StepTable:
    """Scalars of each step from the levels ``sigmas`` (``num_steps`` steps, ``len(sigmas) ≥ num_steps``)."""
    smin, smax, sd = config.sigma_min, config.sigma_max, config.sigma_data
    sig = sigmas[:num_steps]
    # the next level; past the training ladder's end, the last level
    nxt = [i + 1 if i + 1 < config.num_train_timesteps else len(sigmas) - 1 for i in range(num_steps)]
    sigma_hat = sigmas[nxt].clamp(min=smin, max=smax)
    # scale = √(σ² + σ_d²);  noise std = √(σ̂² - σ_min²)
    scale = (sig**2 + sd**2) ** 0.5
    c_skip, c_out = boundary_scalings(sig, smin, sd)
    noise_std = (sigma_hat**2 - smin**2) ** 0.5
    return StepTable(scale.tolist(), c_skip.tolist(), c_out.tolist(), noise_std.tolist())  # type: ignore[union-attr]


class CMState(SchedulerState):
    """One run: float64 model timesteps, float32 levels (one more than steps: ``σ_min`` at the end)."""

    def __init__(
        self,
        scheduler: CMStochasticIterativeScheduler,
        timesteps: list[float],
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
        custom: bool = False,
    ) -> None:
        ts = torch.tensor(timesteps, dtype=torch.float64)
        if device is not None and torch.device(device).type == "mps":
            ts = ts.to(torch.float32)  # mps has no float64
        super().__init__(
            scheduler,
            ts.to(device) if device is not None else ts,
            num_inference_steps,
            init_noise_sigma=scheduler.config.sigma_max,
        )
        cfg = scheduler.config
        #: the noise level of each step, on the CPU, then the final ``σ_min``
        self.sigmas = sigmas
        #: whether the run follows caller-given timesteps
        self.custom_timesteps = custom
        self._host = ts.tolist()
        self._table = step_table(sigmas, len(timesteps), cfg)
        self._clip = cfg.clip_denoised
        self._s_noise = cfg.s_noise
        self._scaled = False

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        """The position of ``timestep`` in this run, or in ``schedule_timesteps`` (the second one when it repeats)."""
        if schedule_timesteps is not None:
            return S.first_step_index(timestep, schedule_timesteps, schedule_timesteps.tolist())
        return S.first_step_index(timestep, self.timesteps, self._host)

    def _index(self, timestep: Any) -> int:
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self.index_for_timestep(timestep)
        if self.step_index >= len(self._host):
            raise ValueError(f"this consistency-model run of {len(self._host)} steps is over")
        return self.step_index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """``x/√(σ² + σ_d²)``: the model's input at the current step."""
        i = self._index(timestep)
        self._scaled = True
        return sample / self._table.input_scale[i]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> CMStochasticIterativeSchedulerOutput | tuple[torch.Tensor]:
        """Denoise at the current level, then re-noise to the next one (not in one-step runs)."""
        if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and not timestep.is_floating_point()):
            raise ValueError(
                "CMStochasticIterativeScheduler.step takes one of the run's timesteps (state.timesteps), not an "
                "integer step index"
            )
        if not self._scaled:
            logger.warning("CMStochasticIterativeScheduler: call scale_model_input before step, as pipelines do")
        i = self._index(timestep)
        table = self._table
        # x̂0 = c_out·F(x) + c_skip·x, clipped to [-1, 1]
        denoised = S.axpby(table.c_out[i], model_output, table.c_skip[i], sample)
        if self._clip:
            denoised = denoised.clamp_(-1, 1)
        if len(self._host) > 1:
            noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
            # x_next = x̂0 + S_noise·z·√(σ̂² - σ_min²)
            denoised = denoised + torch.mul(noise, self._s_noise).mul_(table.noise_std[i])
        self.step_index = i + 1
        return CMStochasticIterativeSchedulerOutput(prev_sample=denoised) if return_dict else (denoised,)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x + σ·z`` at the levels of ``timesteps`` (or of the current/begin step, as in diffusers)."""
        if self.begin_index is None:
            indices = [self.index_for_timestep(t) for t in timesteps.reshape(-1)]
        else:
            indices = [self.step_index if self.step_index is not None else self.begin_index] * timesteps.shape[0]
        sigma = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)[indices]
        return original_samples + noise * sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))


class CMStochasticIterativeScheduler(Scheduler):
    """Consistency-model sampling: one step (``plan(1)``) or several (``plan(n)``, ``plan(timesteps=[...])``).

    Custom ``timesteps`` are strictly descending training indices in ``[0, num_train_timesteps)``;
    step ``i`` runs at the level of the ramp position ``t/(T-1)`` of the i-th smallest one
    reversed, as diffusers maps them. Integers passed as ``timestep`` to ``step`` are refused
    (pass the run's float timesteps).
    """

    config_class: ClassVar[type[Config]] = CMStochasticIterativeConfig
    order: ClassVar[int] = 1

    config: CMStochasticIterativeConfig

    def _setup(self) -> None:
        # before set_timesteps diffusers lists the whole training ladder, levels kept in float64
        cfg = self.config
        sigmas = karras_sigmas(uniform_ramp(cfg.num_train_timesteps), cfg.sigma_min, cfg.sigma_max, cfg.rho)
        state = CMState(self, [sigma_to_t(s) for s in sigmas], torch.tensor(sigmas, dtype=torch.float64), None)
        object.__setattr__(self, "_legacy_state", state)

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> CMState:
        """A fresh sampling state: ``num_inference_steps`` evenly strided steps, or custom ``timesteps``."""
        cfg = self.config
        n_train = cfg.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            chosen = S.check_timesteps(timesteps, n_train).tolist()
            steps = None
        else:
            assert num_inference_steps is not None
            if not 1 <= num_inference_steps <= n_train:
                raise ValueError(
                    f"num_inference_steps must be between 1 and num_train_timesteps ({n_train}), got {num_inference_steps}"
                )
            stride = n_train // num_inference_steps
            chosen = [i * stride for i in range(num_inference_steps - 1, -1, -1)]
            steps = num_inference_steps
        # the ramp walks the chosen indices in ascending order: r_i = t_(i)/(T-1)
        ramp = [t / (n_train - 1) for t in reversed(chosen)]
        sigmas = karras_sigmas(ramp, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        levels = torch.tensor([*sigmas, cfg.sigma_min], dtype=torch.float64).to(torch.float32)
        n = steps if steps is not None else len(chosen)
        return CMState(self, [sigma_to_t(s) for s in sigmas], levels, n, device, custom=timesteps is not None)

    # -- diffusers' helpers ---------------------------------------------------------------
    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    @property
    def init_noise_sigma(self) -> float:
        return self.config.sigma_max

    @property
    def custom_timesteps(self) -> bool:
        return self._state().custom_timesteps  # type: ignore[attr-defined]

    def sigma_to_t(self, sigmas: float | Sequence[float] | torch.Tensor) -> Any:
        """``250·ln σ``, the model's timestep for a level (float64)."""
        if isinstance(sigmas, torch.Tensor):
            return 1000 * 0.25 * torch.log(sigmas.double() + 1e-44)
        if isinstance(sigmas, (int, float)):
            return sigma_to_t(float(sigmas))
        return [sigma_to_t(float(s)) for s in sigmas]

    def get_scalings(self, sigma: Level) -> tuple[Level, Level]:
        return edm_scalings(sigma, self.config.sigma_data)

    def get_scalings_for_boundary_condition(self, sigma: Level) -> tuple[Level, Level]:
        return boundary_scalings(sigma, self.config.sigma_min, self.config.sigma_data)

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        return self._state().index_for_timestep(timestep, schedule_timesteps)  # type: ignore[attr-defined]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> CMStochasticIterativeSchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step`` on the default state."""
        return self._state().step(model_output, timestep, sample, generator, return_dict)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)
