"""``FlowMatchEulerDiscreteScheduler``: Euler sampling of a rectified flow, with diffusers' numbers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState

from . import _flow as F

logger = logging.getLogger("diffkit.scheduler.flowmatch")


class FlowMatchEulerConfig(Config):
    """Fields and defaults of diffusers' ``FlowMatchEulerDiscreteScheduler``."""

    owner_name: ClassVar[str] = "FlowMatchEulerDiscreteScheduler"

    num_train_timesteps: PositiveInt = 1000
    shift: float = Field(1.0, gt=0)
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: PositiveInt = 256
    max_image_seq_len: PositiveInt = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = Field(None, ge=0, lt=1)
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: Literal["exponential", "linear"] = "exponential"
    stochastic_sampling: bool = False

    @model_validator(mode="after")
    def _one_schedule_shape(self) -> FlowMatchEulerConfig:
        K.chosen_sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
        return self


@dataclasses.dataclass
class FlowMatchEulerDiscreteSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next sigma."""

    prev_sample: Any


def _steps_table(sigmas: torch.Tensor) -> torch.Tensor:
    """Rows ``(σ_i, σ_{i+1}, σ_{i+1} - σ_i, 1 - σ_{i+1})`` per step, float32."""
    sigma, nxt = sigmas[:-1], sigmas[1:]
    return torch.stack([sigma, nxt, nxt - sigma, 1.0 - nxt])


class FlowMatchEulerState(SchedulerState):
    """One run: timesteps ``t = σ·T``, sigmas (one more than timesteps, ending at 0, or 1 inverted)."""

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        self.sigmas = sigmas.to(device) if device is not None else sigmas
        self._host: list[float] = timesteps.tolist()
        self._table = _steps_table(sigmas)
        self._rows: dict[torch.dtype, tuple[list[tuple[float, ...]], list[tuple[float, ...]]]] = {}
        self._stochastic = scheduler.config.stochastic_sampling
        self._n_train = scheduler.config.num_train_timesteps

    def _coefficients(self, dtype: torch.dtype) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
        rows = self._rows.get(dtype)
        if rows is None:
            full = S.scalar_rows(self._table)
            rows = self._rows[dtype] = (S.scalar_rows(self._table, dtype), full)
        return rows

    def _index_of(self, timestep: Any) -> int:
        if isinstance(timestep, torch.Tensor):
            i = S.view_position(timestep, self.timesteps)
            if i is not None:
                return F.first_match(self._host, self._host[i])
        return F.first_match(self._host, F.as_float32(timestep))

    def _current_index(self, timestep: Any) -> int:
        if self.step_index is None:
            self.step_index = self.begin_index if self.begin_index is not None else self._index_of(timestep)
        if self.step_index >= self._table.shape[1]:
            raise ValueError(f"all {self._table.shape[1]} steps of this run have been taken; plan a new run")
        return self.step_index

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
        *,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        per_token_timesteps: torch.Tensor | None = None,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple[torch.Tensor]:
        """One Euler step along the flow, in float32, returned in the model output's dtype.

        ``x_next = x + (σ_next - σ)·v``; with ``stochastic_sampling`` the clean estimate is
        re-noised instead: ``x_next = (1-σ_next)·(x - σ·v) + σ_next·z``. ``s_churn``,
        ``s_tmin``, ``s_tmax`` and ``s_noise`` are accepted and unused, as in diffusers.
        ``per_token_timesteps`` (batch × tokens) steps each token from its own sigma to the
        largest listed sigma below it; the result then stays float32.
        """
        F.check_not_integer(timestep, "FlowMatchEulerDiscreteScheduler")
        i = self._current_index(timestep)
        sample = sample.to(torch.float32)
        if per_token_timesteps is not None:
            prev = self._per_token_step(model_output, sample, per_token_timesteps, generator)
        else:
            factors, values = self._coefficients(model_output.dtype)
            sigma, _, dt, _ = factors[i]
            _, sigma_next, _, keep = values[i]
            if self._stochastic:
                # x0 = x - σ·v;  x_next = (1-σ_next)·x0 + σ_next·z
                if model_output.dtype == sample.dtype:
                    x0 = torch.mul(model_output, sigma)
                    x0 = torch.sub(sample, x0, out=x0)
                else:
                    x0 = sample - sigma * model_output
                noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
                prev = S.axpby_into(keep, x0, sigma_next, noise, own_x=True, own_y=True)
            elif model_output.dtype == torch.float32:
                # x_next = x + (σ_next - σ)·v
                prev = torch.mul(model_output, dt).add_(sample)
            else:
                prev = sample + dt * model_output
            prev = prev.to(model_output.dtype)
        self.step_index = i + 1
        if not return_dict:
            return (prev,)
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev)

    def _per_token_step(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        per_token_timesteps: torch.Tensor,
        generator: Any,
    ) -> torch.Tensor:
        current = per_token_timesteps / self._n_train
        listed = self.sigmas[:, None, None]
        # σ_next = the largest listed σ below σ_token (0 when none is)
        below = listed < current[None] - 1e-6
        nxt = (below * listed).max(dim=0).values
        current, nxt = current[..., None], nxt[..., None]
        if self._stochastic:
            x0 = sample - current * model_output
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            return (1.0 - nxt) * x0 + nxt * noise
        # x_next = x + (σ_token - σ_next)·v (the per-token models' sign)
        return sample + (current - nxt) * model_output

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """Forward process to the sigma of ``timestep``: ``σ·ε + (1-σ)·x0`` (img2img, inpainting)."""
        sigmas = self.sigmas.to(device=sample.device, dtype=sample.dtype)
        values = timestep.reshape(-1) if isinstance(timestep, torch.Tensor) else torch.tensor([timestep]).reshape(-1)
        if self.begin_index is None:
            indices = [F.first_match(self._host, F.as_float32(t)) for t in values]
        else:
            start = self.step_index if self.step_index is not None else self.begin_index
            indices = [start] * values.shape[0]
        sigma = sigmas[indices].flatten().reshape(-1, *([1] * (sample.ndim - 1)))
        # x_σ = σ·ε + (1-σ)·x0
        return sigma * noise + (1.0 - sigma) * sample


class FlowMatchEulerDiscreteScheduler(Scheduler):
    """Euler sampling of rectified-flow models (SD3, Flux, ...): ``x_next = x + (σ_next - σ)·v``.

    ``plan(n)`` spaces ``n`` sigmas between the training schedule's ends, applies the static
    ``shift`` (or, with ``use_dynamic_shifting``, the time shift of ``mu``, which is then
    required), stretches to ``shift_terminal``, reshapes to karras/exponential/beta sigmas if
    asked and appends the terminal 0 (1 with ``invert_sigmas``). Custom ``sigmas`` are shifted
    the same way; custom ``timesteps`` are used as given. ``set_shift`` changes the shift of
    the diffusers-style surface only; ``plan(..., shift=...)`` does it per call.
    Where diffusers differs: ``plan(n, image_seq_len=L)`` may compute ``mu`` from the config's
    base/max shift fields; missing lengths give ``ValueError`` instead of ``TypeError``.
    """

    config_class: ClassVar[type[Config]] = FlowMatchEulerConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: FlowMatchEulerConfig
    sigma_min: float
    sigma_max: float

    def _setup(self) -> None:
        cfg = self.config
        if cfg.use_beta_sigmas:
            try:
                import scipy.stats  # noqa: F401
            except ImportError as exc:
                raise ImportError("use_beta_sigmas=True needs scipy: python -m pip install scipy") from exc
        sigmas = F.training_sigmas(cfg.num_train_timesteps)
        if not cfg.use_dynamic_shifting:
            sigmas = F.shift_sigmas(sigmas, cfg.shift)
        object.__setattr__(self, "sigma_min", sigmas[-1].item())
        object.__setattr__(self, "sigma_max", sigmas[0].item())
        object.__setattr__(self, "_shift_override", None)
        training = FlowMatchEulerState(self, sigmas * cfg.num_train_timesteps, sigmas, None)
        object.__setattr__(self, "_legacy_state", training)

    # -- schedules ------------------------------------------------------------------------
    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        mu: float | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        *,
        shift: float | None = None,
        image_seq_len: int | None = None,
    ) -> FlowMatchEulerState:
        """A fresh run; see the class docstring for how its sigmas are made."""
        cfg = self.config
        n_train = cfg.num_train_timesteps
        if mu is None and image_seq_len is not None:
            mu = self._mu_for(image_seq_len)
        if cfg.use_dynamic_shifting and mu is None:
            raise ValueError("mu must be passed (or image_seq_len, to compute it) when use_dynamic_shifting=True")
        custom_sigmas = None if sigmas is None else torch.as_tensor(sigmas).detach().to("cpu", torch.float32).flatten()
        custom_ts = None if timesteps is None else torch.as_tensor(timesteps).detach().to("cpu", torch.float32).flatten()
        n = self._count(num_inference_steps, custom_sigmas, custom_ts)
        if custom_ts is not None and custom_sigmas is None:
            logger.warning(
                "timesteps were given without sigmas: they are used as given while the sigmas derived from them are "
                "shifted, so the two may disagree; pass sigmas (or both) to control the schedule"
            )

        if custom_sigmas is not None:
            sig = custom_sigmas
        elif custom_ts is not None:
            sig = custom_ts / n_train
        else:
            sig = F.np_linspace(self.sigma_max * n_train, self.sigma_min * n_train, n) / n_train
        if cfg.use_dynamic_shifting:
            sig = F.time_shift(cfg.time_shift_type, mu, sig)  # type: ignore[arg-type]
        else:
            sig = F.shift_sigmas(sig, self.shift if shift is None else shift)
        if cfg.shift_terminal:
            if float(sig[-1]) >= 1:
                raise ValueError(
                    f"shift_terminal={cfg.shift_terminal} stretches the schedule to end there, but its last sigma is "
                    f"{float(sig[-1])}; it needs at least two sigmas and a last one below 1"
                )
            sig = F.stretch_to_terminal(sig, cfg.shift_terminal)
        shape = K.chosen_sigma_schedule(cfg.use_karras_sigmas, cfg.use_exponential_sigmas, cfg.use_beta_sigmas)
        if shape is not None:
            sig = F.reshape_schedule(shape, sig, n)
        sig = sig.to(torch.float32)

        ts = custom_ts if custom_ts is not None else sig * n_train
        if cfg.invert_sigmas:
            sig = 1.0 - sig
            ts = sig * n_train
            sig = torch.cat([sig, torch.ones(1)])
        else:
            sig = torch.cat([sig, torch.zeros(1)])
        return FlowMatchEulerState(self, ts, sig, n, device)

    @staticmethod
    def _count(num: int | None, sigmas: torch.Tensor | None, timesteps: torch.Tensor | None) -> int:
        if sigmas is not None and timesteps is not None and len(sigmas) != len(timesteps):
            raise ValueError(f"sigmas ({len(sigmas)}) and timesteps ({len(timesteps)}) must have the same length")
        given = sigmas if sigmas is not None else timesteps
        if num is None:
            if given is None:
                raise ValueError("pass num_inference_steps, sigmas or timesteps")
            num = len(given)
        elif given is not None and len(given) != num:
            raise ValueError(
                f"num_inference_steps ({num}) must equal the number of custom sigmas/timesteps ({len(given)})"
            )
        if num < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num}")
        return num

    def _mu_for(self, image_seq_len: int) -> float:
        cfg = self.config
        if cfg.base_shift is None or cfg.max_shift is None:
            raise ValueError("image_seq_len needs base_shift and max_shift in the config; pass mu instead")
        return F.dynamic_shift_mu(
            image_seq_len, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift
        )

    # -- the diffusers-style surface --------------------------------------------------------
    @property
    def shift(self) -> float:
        """The static shift ``set_timesteps`` applies: the config's, unless ``set_shift`` changed it."""
        override = self._shift_override
        return self.config.shift if override is None else override

    def set_shift(self, shift: float) -> None:
        """Change the shift of later ``set_timesteps`` calls (the diffusers-style surface only)."""
        object.__setattr__(self, "_shift_override", float(shift))

    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        mu: float | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """diffusers' ``set_timesteps``, argument order included, on the default state."""
        state = self.plan(num_inference_steps, device, sigmas, mu, timesteps, shift=self.shift)
        object.__setattr__(self, "_legacy_state", state)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        per_token_timesteps: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> FlowMatchEulerDiscreteSchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default state."""
        return self._state().step(  # type: ignore[call-arg]
            model_output,
            timestep,
            sample,
            generator,
            return_dict,
            s_churn=s_churn,
            s_tmin=s_tmin,
            s_tmax=s_tmax,
            s_noise=s_noise,
            per_token_timesteps=per_token_timesteps,
        )

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """diffusers' ``scale_noise`` on the default state."""
        return self._state().scale_noise(sample, timestep, noise)  # type: ignore[attr-defined]

    def time_shift(self, mu: float, sigma: float, t: torch.Tensor) -> torch.Tensor:
        """The dynamic time shift of ``t``; ``sigma`` is the exponent of ``1/t - 1`` (1 in practice)."""
        return F.time_shift(self.config.time_shift_type, mu, torch.as_tensor(t), sigma)

    def stretch_shift_to_terminal(self, t: torch.Tensor) -> torch.Tensor:
        """Stretch ``t`` so that its last value is the config's ``shift_terminal``."""
        if self.config.shift_terminal is None:
            raise ValueError("shift_terminal is not set in the config")
        return F.stretch_to_terminal(torch.as_tensor(t), self.config.shift_terminal)
