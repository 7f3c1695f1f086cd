"""``IPNDMScheduler``: improved pseudo numerical methods (fourth-order linear multistep on the
trigonometric α/σ path), with the numbers of diffusers' scheduler.

The noise path of a run with ``N`` steps is ``σ_i = sin²(π/2·s_i)``, ``α_i = √(1 - σ_i²)`` for
``s_i`` going linearly from 1 to 0 (or ``σ_i`` given as ``trained_betas``); the timesteps are
``atan2(σ_i, α_i)·2/π``. These tables depend on ``N``, so they live in the :class:`IPNDMState`
with the multistep history. Dance Diffusion uses this scheduler.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
from pydantic import PositiveInt, field_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import Scheduler, SchedulerState

from .multistep import MAX_HISTORY, adams_bashforth

logger = logging.getLogger("diffkit.scheduler")

#: the smallest α the clean-sample estimate divides by
MIN_ALPHA = 1e-8


class IPNDMConfig(Config):
    """Fields and defaults of diffusers' ``IPNDMScheduler``."""

    owner_name: ClassVar[str] = "IPNDMScheduler"

    num_train_timesteps: PositiveInt = 1000
    trained_betas: tuple[float, ...] | None = None

    @field_validator("trained_betas", mode="before")
    @classmethod
    def _betas_as_list(cls, value: Any) -> Any:
        return value.tolist() if hasattr(value, "tolist") else value

    @field_validator("trained_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError(f"trained_betas needs at least 2 values (one per step plus the end), got {len(value)}")
            if not all(0.0 <= b <= 1.0 for b in value):
                raise ValueError("trained_betas values are noise levels σ and must lie in [0, 1]")
        return value


def ipndm_tables(num_steps: int, trained_betas: tuple[float, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 noise path ``(σ, α)`` of a run: ``num_steps + 1`` points, the last one clean."""
    if trained_betas is not None:
        sigmas = torch.tensor(trained_betas, dtype=torch.float32)
    else:
        ramp = torch.linspace(1, 0, num_steps + 1)
        ramp[-1] = 0.0
        # σ_i = sin²(π/2·s_i)
        sigmas = torch.sin(ramp * math.pi / 2) ** 2
    # α_i = √(1 - σ_i²)
    return sigmas, (1.0 - sigmas**2) ** 0.5


def ipndm_timesteps(sigmas: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    # t_i = atan2(σ_i, α_i)·2/π, without the final clean point
    return (torch.atan2(sigmas, alphas) / math.pi * 2)[:-1]


class IPNDMState(SchedulerState):
    """One IPNDM run: its noise path, step index and the last four derivative estimates."""

    def __init__(
        self,
        scheduler: IPNDMScheduler,
        sigmas: torch.Tensor,
        alphas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        timesteps = ipndm_timesteps(sigmas, alphas)
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        #: σ_i (diffusers calls them ``betas``) and α_i, float32 on the CPU
        self.betas = sigmas
        self.alphas = alphas
        self._host = timesteps.tolist()
        self._sigma = sigmas.tolist()
        self._alpha = alphas.tolist()
        #: the last derivative estimates, newest last (at most four)
        self.ets: list[torch.Tensor] = []

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        """The position of ``timestep`` in this run, or in ``schedule_timesteps`` (the second one when it repeats)."""
        if schedule_timesteps is not None:
            return S.first_step_index(timestep, schedule_timesteps, schedule_timesteps.tolist())
        return S.first_step_index(timestep, self.timesteps, self._host)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """One step along the noise path; the first call finds its position from ``timestep``
        (or ``begin_index``), later calls simply advance."""
        if self.num_inference_steps is None:
            raise ValueError("this IPNDM state has no inference steps: call set_timesteps(n) or plan(n) first")
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self.index_for_timestep(timestep)
        i = self.step_index
        if i + 1 >= len(self._sigma):
            raise ValueError(f"IPNDM run of {len(self._host)} steps is over: step {i + 1} does not exist")
        sigma, alpha = self._sigma[i], self._alpha[i]
        # d_i = σ_i·x + α_i·ε
        derivative = S.axpby(sigma, sample, alpha, model_output)
        self.ets = [*self.ets[-(MAX_HISTORY - 1) :], derivative]
        eps = adams_bashforth(self.ets)
        # x̂0 = (x - σ_i·ê)/max(α_i, 1e-8);  x_next = α_{i+1}·x̂0 + σ_{i+1}·ê
        x0 = torch.sub(sample, eps * sigma).div_(max(alpha, MIN_ALPHA))
        prev_sample = S.axpby(self._alpha[i + 1], x0, self._sigma[i + 1], eps)
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)


class IPNDMScheduler(Scheduler):
    """Improved PNDM: a fourth-order linear multistep method on a trigonometric noise path.

    ``state = scheduler.plan(n)`` builds the path for ``n`` steps. As in diffusers,
    ``trained_betas`` fixes the path (its length minus one is the number of steps) whatever
    ``n`` is asked for; a differing ``n`` is reported in a warning.
    """

    config_class: ClassVar[type[Config]] = IPNDMConfig
    order: ClassVar[int] = 1
    pndm_order: ClassVar[int] = 4

    config: IPNDMConfig

    def _setup(self) -> None:
        # diffusers' scheduler starts out planned for num_train_timesteps steps
        object.__setattr__(self, "_legacy_state", self.plan(self.config.num_train_timesteps))

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> IPNDMState:
        """A fresh sampling state of ``num_inference_steps`` steps."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"IPNDMScheduler.plan needs num_inference_steps >= 1, got {num_inference_steps}")
        trained = self.config.trained_betas
        if trained is not None and len(trained) - 1 != num_inference_steps:
            logger.warning(
                "IPNDMScheduler: trained_betas fix the run to %d steps; num_inference_steps=%d is not used",
                len(trained) - 1,
                num_inference_steps,
            )
        sigmas, alphas = ipndm_tables(num_inference_steps, trained)
        return IPNDMState(self, sigmas, alphas, num_inference_steps, device)

    def step(
        self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``IPNDMScheduler.step`` on the default state."""
        return self._state().step(model_output, timestep, sample, return_dict)

    @property
    def betas(self) -> torch.Tensor:
        return self._state().betas  # type: ignore[attr-defined]

    @property
    def alphas(self) -> torch.Tensor:
        return self._state().alphas  # type: ignore[attr-defined]

    @property
    def ets(self) -> list[torch.Tensor]:
        return self._state().ets  # type: ignore[attr-defined]

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        return self._state().index_for_timestep(timestep, schedule_timesteps)  # type: ignore[attr-defined]
