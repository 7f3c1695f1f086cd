"""``Scheduler``: immutable config and training tables; per-call state from :meth:`plan`.

A scheduler object never changes after construction, so one pipeline serves concurrent calls:
each call asks ``state = scheduler.plan(num_inference_steps, device=...)`` and drives
``state.scale_model_input`` / ``state.step``. The diffusers-style surface (``set_timesteps``,
``timesteps``, ``step``, ``scale_model_input``, ``init_noise_sigma``) is a thin layer over one
default state kept on the object, for user code written against diffusers; it is not
thread-safe, the ``plan`` API is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator

from .config import Config, Configurable

if TYPE_CHECKING:
    import torch

    from .outputs import SchedulerOutput


class SchedulerState:
    """Everything that changes while sampling: timesteps, step index, multistep history.

    Subclasses implement :meth:`step` (and :meth:`scale_model_input` where the input needs
    scaling). ``timesteps`` is a 1-D tensor; ``init_noise_sigma`` multiplies the initial noise.
    """

    order: int = 1

    def __init__(
        self,
        scheduler: Scheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        init_noise_sigma: float | torch.Tensor = 1.0,
    ) -> None:
        self.scheduler = scheduler
        self.timesteps = timesteps
        self.num_inference_steps = num_inference_steps
        self.init_noise_sigma = init_noise_sigma
        self.step_index: int | None = None
        self.begin_index: int | None = None

    @property
    def config(self) -> Config:
        return self.scheduler.config

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start from the ``begin_index``-th timestep (img2img)."""
        self.begin_index = begin_index

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> SchedulerOutput | tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(original, noise, timesteps)

    def __len__(self) -> int:
        return len(self.timesteps)


class BetaScheduleConfig(Config):
    """The training noise schedule that diffusers' discrete-time schedulers share, with its defaults.

    ``trained_betas``, when given, replaces the named ``beta_schedule``; a numpy array or tensor
    is accepted and kept as a tuple. Scheduler configs subclass this and override what differs.
    """

    num_train_timesteps: PositiveInt = 1000
    beta_start: float = Field(0.0001, ge=0, le=1)
    beta_end: float = Field(0.02, ge=0, le=1)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    trained_betas: tuple[float, ...] | None = None

    @field_validator("trained_betas", mode="before")
    @classmethod
    def _betas_as_list(cls, value: Any) -> Any:
        return value.tolist() if hasattr(value, "tolist") else value


#: the discrete-time schedulers that accept one another's configs (diffusers' ``KarrasDiffusionSchedulers``):
#: the ``compatibles_names`` of each of them
KARRAS_COMPATIBLES: tuple[str, ...] = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler",
    "EDMEulerScheduler",
)


class Scheduler(Configurable):
    """Base class of every diffkit scheduler.

    Subclasses set ``config_class``, compute their training tables in :meth:`_setup` and
    implement :meth:`plan`. ``compatibles_names`` mirrors diffusers' ``_compatibles``.
    """

    config_class: ClassVar[type[Config]] = Config
    config_name: ClassVar[str] = "scheduler_config.json"
    order: ClassVar[int] = 1
    compatibles_names: ClassVar[tuple[str, ...]] = ()

    _frozen: bool = False

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self._init_config(config, kwargs)
        object.__setattr__(self, "_legacy_state", None)
        self._setup()
        object.__setattr__(self, "_frozen", True)

    def _setup(self) -> None:
        """Compute immutable tables (betas, ``alphas_cumprod``...) from ``self.config``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if self._frozen:
            raise AttributeError(
                f"{type(self).__name__} is immutable; build a new one with "
                f"{type(self).__name__}.from_config(scheduler.config, {name}=...) instead"
            )
        object.__setattr__(self, name, value)

    # -- the per-call API ---------------------------------------------------------------
    def plan(self, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> SchedulerState:
        """A fresh sampling state for one call."""
        raise NotImplementedError

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-diffuse ``original`` to ``timesteps``."""
        raise NotImplementedError(f"{type(self).__name__} does not define add_noise")

    @property
    def compatibles(self) -> list[type[Scheduler]]:
        """The installed scheduler classes that accept this scheduler's config."""
        from ._registry import registry

        names = sorted({type(self).__name__, *self.compatibles_names})
        return [registry.get("scheduler", n) for n in names if registry.has("scheduler", n)]

    # -- diffusers-style surface over one default state -------------------------------
    def _state(self) -> SchedulerState:
        state = self._legacy_state
        if state is None:
            raise RuntimeError(
                f"{type(self).__name__}: call set_timesteps(...) first, or use state = scheduler.plan(...)"
            )
        return state

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> None:
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device=device, **kwargs))

    @property
    def timesteps(self) -> torch.Tensor:
        return self._state().timesteps

    @property
    def num_inference_steps(self) -> int | None:
        return self._legacy_state.num_inference_steps if self._legacy_state is not None else None

    @property
    def init_noise_sigma(self) -> float | torch.Tensor:
        return self._legacy_state.init_noise_sigma if self._legacy_state is not None else 1.0

    @property
    def step_index(self) -> int | None:
        return self._legacy_state.step_index if self._legacy_state is not None else None

    @property
    def begin_index(self) -> int | None:
        return self._legacy_state.begin_index if self._legacy_state is not None else None

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._state().set_begin_index(begin_index)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        if self._legacy_state is None:
            return sample
        return self._legacy_state.scale_model_input(sample, timestep)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self._state().step(model_output, timestep, sample, *args, **kwargs)

    def __len__(self) -> int:
        return int(getattr(self.config, "num_train_timesteps", 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.model_dump()})"
