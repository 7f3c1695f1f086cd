"""``Scheduler``: immutable config and training tables; per-call state from :meth:`plan`.

A scheduler object never changes after construction, so one pipeline serves concurrent calls:
each call asks ``state = scheduler.plan(num_inference_steps, device=...)`` and drives
``state.scale_model_input`` / ``state.step``. The diffusers-style surface (``set_timesteps``,
``timesteps``, ``step``, ``scale_model_input``, ``init_noise_sigma``) is a thin layer over one
default state kept on the object, for user code written against diffusers; it is not
thread-safe, the ``plan`` API is.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, PositiveInt, field_validator

from .config import Config, Configurable
from .errors import DiffkitError

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

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(original_samples, noise, timesteps)

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


#: diffusers' ``KarrasDiffusionSchedulers``: the ``compatibles_names`` of each discrete-time scheduler in it
#: except EDMEulerScheduler, which diffusers lists here but which itself lists none (it accepts no DDPM model)
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


class TimestepsNotSetError(ValueError, RuntimeError):
    """A diffusers-style call that needs ``set_timesteps`` first.

    A ``ValueError``, as diffusers raises there, and a ``RuntimeError``, as diffkit raised before.
    """


#: (source, target) class-name pairs already warned about by :meth:`Scheduler.from_config`
_incompatible_swaps_warned: set[tuple[str, str]] = set()


def scheduler_class_name(source: Any) -> str | None:
    """The scheduler class that wrote ``source``: a scheduler, its class, a config, a mapping or a name."""
    if isinstance(source, str):
        return source
    if isinstance(source, type):
        return source.__name__
    if isinstance(source, Scheduler):
        return type(source).__name__
    if isinstance(source, Config):
        return source.meta.get("_class_name") or source.owner_name or None
    if isinstance(source, Mapping):
        name = source.get("_class_name")
        return name if isinstance(name, str) else None
    return None


def compatible_schedulers(source: Any) -> list[str]:
    """Sorted names of the installed schedulers that accept ``source``'s config.

    ``source`` is what :meth:`Scheduler.is_compatible_with` takes; the CLI lists these when it refuses a swap.
    """
    from ._registry import registry

    name = scheduler_class_name(source)
    if name is None:
        raise ValueError(f"cannot tell which scheduler wrote {source!r}: it names no _class_name")
    found = []
    for candidate in registry.names("scheduler"):
        try:
            cls = registry.get("scheduler", candidate)
        except (DiffkitError, ImportError):  # a broken plugin is reported where it is used, not here
            continue
        if isinstance(cls, type) and issubclass(cls, Scheduler) and cls.is_compatible_with(name):
            found.append(candidate)
    return found


def _set_timesteps_like(plan: Callable[..., Any]) -> Callable[..., None]:
    """A diffusers-style ``set_timesteps`` whose signature is ``plan``'s (pipelines inspect it)."""

    def set_timesteps(self: Scheduler, *args: Any, **kwargs: Any) -> None:
        object.__setattr__(self, "_legacy_state", self.plan(*args, **kwargs))

    set_timesteps.__signature__ = inspect.signature(plan).replace(return_annotation=None)  # type: ignore[attr-defined]
    set_timesteps.__doc__ = "diffusers' ``set_timesteps``: replaces the default run with ``plan(...)``'s."
    set_timesteps.__qualname__ = plan.__qualname__.rsplit(".", 1)[0] + ".set_timesteps"
    set_timesteps._mirrors_plan = True  # type: ignore[attr-defined]
    return set_timesteps


class Scheduler(Configurable):
    """Base class of every diffkit scheduler.

    Subclasses set ``config_class``, compute their training tables in :meth:`_setup` and
    implement :meth:`plan`. ``compatibles_names`` is diffusers' ``_compatibles`` of the class of
    the same name: the schedulers whose configs this one accepts. A subclass that does not write
    its own ``set_timesteps`` gets one with ``plan``'s signature.
    """

    config_class: ClassVar[type[Config]] = Config
    config_name: ClassVar[str] = "scheduler_config.json"
    order: ClassVar[int] = 1
    compatibles_names: ClassVar[tuple[str, ...]] = ()

    _frozen: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        inherited = getattr(cls, "set_timesteps", None)
        mirrors = inherited is Scheduler.set_timesteps or getattr(inherited, "_mirrors_plan", False)
        if "plan" in cls.__dict__ and mirrors:
            cls.set_timesteps = _set_timesteps_like(cls.__dict__["plan"])  # type: ignore[method-assign]

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

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward-diffuse ``original_samples`` to ``timesteps``."""
        raise NotImplementedError(f"{type(self).__name__} does not define add_noise")

    @property
    def compatibles(self) -> list[type[Scheduler]]:
        """The installed scheduler classes this one lists as compatible (diffusers' ``compatibles``)."""
        from ._registry import registry

        names = sorted({type(self).__name__, *self.compatibles_names})
        return [registry.get("scheduler", n) for n in names if registry.has("scheduler", n)]

    @classmethod
    def is_compatible_with(cls, source: Any) -> bool:
        """Whether this class samples correctly from a model trained with ``source``'s scheduler.

        ``source`` is a scheduler, its class, its config (or mapping with ``_class_name``) or a
        class name. True for the same class, or when this class's ``compatibles_names`` (diffusers'
        ``_compatibles``) names the source: the target decides which configs it accepts, so an EDM
        scheduler, which lists none, is not compatible with a DDPM-trained model.
        """
        name = scheduler_class_name(source)
        if name is None:
            raise ValueError(f"cannot tell which scheduler wrote {source!r}: it names no _class_name")
        return name == cls.__name__ or name in cls.compatibles_names

    @classmethod
    def from_config(cls, config: Config | Mapping[str, Any] | None = None, /, **overrides: Any) -> Self:
        """Build from this class's config or another scheduler's (a swap); warns once per incompatible pair."""
        source = scheduler_class_name(config) if config is not None else None
        if source is not None and not cls.is_compatible_with(source):
            pair = (source, cls.__name__)
            if pair not in _incompatible_swaps_warned:
                _incompatible_swaps_warned.add(pair)
                listed = ", ".join(compatible_schedulers(source)) or "none installed"
                warnings.warn(
                    f"{cls.__name__} does not list {source} among the schedulers whose configs it accepts "
                    f"(diffusers' _compatibles): unless the model was trained or distilled for {cls.__name__}, "
                    f"its samples may be noise. Schedulers that accept a {source} config: {listed}",
                    UserWarning,
                    stacklevel=2,
                )
        return super().from_config(config, **overrides)

    # -- diffusers-style surface over one default state -------------------------------
    def _state(self) -> SchedulerState:
        state = self._legacy_state
        if state is None:
            raise TimestepsNotSetError(
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

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, ...]:
        """diffusers' ``step`` on the default run (subclasses with more step options override it)."""
        return self._state().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    def __len__(self) -> int:
        return int(getattr(self.config, "num_train_timesteps", 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.model_dump()})"
