"""``DDPMWuerstchenScheduler``: ancestral DDPM on a continuous time ``t ∈ [0, 1]``, with diffusers' numbers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from pydantic import Field

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState


class DDPMWuerstchenConfig(Config):
    """Fields and defaults of diffusers' ``DDPMWuerstchenScheduler``."""

    owner_name: ClassVar[str] = "DDPMWuerstchenScheduler"

    scaler: float = Field(1.0, gt=0)
    s: float = Field(0.008, ge=0)


@dataclasses.dataclass
class DDPMWuerstchenSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next listed time."""

    prev_sample: Any


def warp_time(t: torch.Tensor, scaler: float) -> torch.Tensor:
    """``scaler > 1`` spends more time near ``t = 1``, ``< 1`` near ``t = 0``."""
    if scaler > 1:
        # t' = 1 - (1-t)^k
        return 1 - (1 - t) ** scaler
    if scaler < 1:
        # t' = t^k
        return t**scaler
    return t


def cosine_alpha_cumprod(t: torch.Tensor, s: torch.Tensor, start: torch.Tensor, scaler: float) -> torch.Tensor:
    """``ᾱ(t)`` of the cosine schedule, normalised to ``ᾱ(0) = 1``, clamped to ``[1e-4, 0.9999]``.

    ``s`` and ``start`` are 1-element float32 tensors, so ``t`` of any float dtype is promoted
    to float32 as in the reference.
    """
    t = warp_time(t, scaler)
    # ᾱ(t) = cos²((t+s)/(1+s)·π/2)/cos²(s/(1+s)·π/2)
    return (torch.cos((t + s) / (1 + s) * torch.pi * 0.5) ** 2 / start).clamp(0.0001, 0.9999)


def step_coefficients(ab: torch.Tensor, ab_prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(√(1/α), 1-α, √(1-ᾱ), σ)`` of the step ``ᾱ → ᾱ_prev`` with ``α = ᾱ/ᾱ_prev``."""
    alpha = ab / ab_prev
    # σ = √((1-α)(1-ᾱ_prev)/(1-ᾱ))
    std = ((1 - alpha) * (1.0 - ab_prev) / (1.0 - ab)).sqrt()
    return (1.0 / alpha).sqrt(), 1 - alpha, (1 - ab).sqrt(), std


def posterior_mean(sample: torch.Tensor, model_output: Any, c_mean: Any, c_eps: Any, c_norm: Any) -> torch.Tensor:
    # μ = √(1/α)·(x - (1-α)·ε/√(1-ᾱ))
    return c_mean * (sample - c_eps * model_output / c_norm)


class DDPMWuerstchenState(SchedulerState):
    """One run over descending times in ``[0, 1]`` (the last one, usually 0, is only landed on)."""

    def __init__(
        self, scheduler: DDPMWuerstchenScheduler, timesteps: torch.Tensor, device: Any = None
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, len(timesteps) - 1)
        self._cpu_timesteps = timesteps
        self._host: list[float] = timesteps.tolist()
        self._first: dict[float, int] = {}
        for i, t in enumerate(self._host):
            self._first.setdefault(t, i)
        if scheduler.config.scaler == 1.0:
            ab = scheduler.alpha_cumprod(timesteps)
        else:
            # one time at a time, as the reference evaluates a small batch: torch's vectorised pow
            # rounds differently from its scalar pow in the last bit
            ab = torch.cat([scheduler.alpha_cumprod(t.reshape(1)) for t in timesteps])
        # per step: (√(1/α), 1-α, √(1-ᾱ), σ, [t_prev ≠ 0])
        lands = (timesteps[1:] != 0).to(ab.dtype)
        self._rows = S.scalar_rows(torch.stack([*step_coefficients(ab[:-1], ab[1:]), lands]))

    def _listed_index(self, timestep: Any) -> int | None:
        """The position of a uniform ``timestep`` batch in this run, found without a device read."""
        if not isinstance(timestep, torch.Tensor):
            value = torch.tensor(float(timestep), dtype=self.timesteps.dtype).item()
            return self._first.get(value)
        if timestep.dtype != self.timesteps.dtype:
            return None
        if timestep.device.type != "cpu":
            if timestep.dim() > 0 and any(stride != 0 for stride in timestep.stride()):
                return None
            i = S.view_position(timestep.as_strided((), (), timestep.storage_offset()), self.timesteps)
            return None if i is None else self._first.get(self._host[i])
        values = timestep.reshape(-1).tolist()
        if not values or any(v != values[0] for v in values):
            return None
        return self._first.get(values[0])

    def previous_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """The listed time after the one nearest to ``timestep[0]``, repeated per batch item."""
        t = timestep.reshape(-1)
        index = (self.timesteps - t[0]).abs().argmin()
        if index.device.type == "cpu" and int(index) + 1 >= len(self._host):
            raise ValueError(f"timestep {float(t[0])} is the last of this run; there is no step after it")
        following = torch.cat([self.timesteps[1:], self.timesteps[-1:]])
        return following[index][None].expand(t.shape[0])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMWuerstchenSchedulerOutput | tuple[torch.Tensor]:
        """One ancestral step ``x_t → x_prev`` to the next listed time; noise is drawn every step
        and added unless the next time is 0. Computed in float32, returned in the model's dtype.
        """
        dtype = model_output.dtype
        i = self._listed_index(timestep)
        if i is not None and i < len(self._rows):
            c_mean, c_eps, c_norm, std, mask = self._rows[i]
            # μ = √(1/α)·(x - (1-α)·ε/√(1-ᾱ)), in float32
            mean = torch.mul(model_output.float(), c_eps).div_(c_norm)
            mean = torch.sub(sample.float(), mean, out=mean).mul_(c_mean)
            noise = randn_tensor(mean.shape, generator=generator, device=model_output.device, dtype=dtype)
            # x_prev = μ + σ·z·[t_prev ≠ 0]
            spread = torch.mul(noise.float(), std)
            prev = mean.add_(spread if mask == 1.0 else spread.mul_(mask))
            self.step_index = i + 1
        else:
            prev = self._step_any(model_output, timestep, sample, generator)
        prev = prev.to(dtype)
        if not return_dict:
            return (prev,)
        return DDPMWuerstchenSchedulerOutput(prev_sample=prev)

    def _step_any(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any) -> torch.Tensor:
        """The step for any times (per batch item), all in tensors on the model's device."""
        device = model_output.device
        t = torch.as_tensor(timestep, device=device).reshape(-1)
        prev_t = self.previous_timestep(t).to(device)
        view = (-1, *([1] * (sample.ndim - 1)))
        ab = self.scheduler.alpha_cumprod(t).view(view)  # type: ignore[attr-defined]
        ab_prev = self.scheduler.alpha_cumprod(prev_t).view(view)  # type: ignore[attr-defined]
        c_mean, c_eps, c_norm, std = step_coefficients(ab, ab_prev)
        mean = posterior_mean(sample, model_output, c_mean, c_eps, c_norm)
        noise = randn_tensor(mean.shape, generator=generator, device=device, dtype=model_output.dtype)
        return mean + std * noise * (prev_t != 0).float().view(view)


class DDPMWuerstchenScheduler(Scheduler):
    """DDPM sampling for Wuerstchen / Stable Cascade, on ``ᾱ(t) = cos²((t+s)/(1+s)·π/2)/ᾱ(0)``.

    ``plan(n)`` walks ``linspace(1, 0, n + 1)``; custom ``timesteps`` (floats in ``[0, 1]``)
    are used as given. The model sees the time itself (a float ratio) and ``step`` takes it per
    batch item, as in diffusers; it steps to the listed time after the one nearest to the first
    item's. Where diffusers differs: stepping from the last listed time raises ``ValueError``
    (an ``IndexError`` there), and a 0-d timestep is accepted as a batch of one.
    """

    config_class: ClassVar[type[Config]] = DDPMWuerstchenConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: DDPMWuerstchenConfig

    def _setup(self) -> None:
        s = torch.tensor([self.config.s])
        object.__setattr__(self, "s", s)
        object.__setattr__(self, "_start", torch.cos(s / (1 + s) * torch.pi * 0.5) ** 2)
        object.__setattr__(self, "_legacy_state", None)

    @property
    def scaler(self) -> float:
        return self.config.scaler

    def alpha_cumprod(self, t: torch.Tensor) -> torch.Tensor:
        """``ᾱ(t)`` at times ``t`` (float32, on ``t``'s device)."""
        device = t.device
        return cosine_alpha_cumprod(t, self.s.to(device), self._start.to(device), self.config.scaler)  # type: ignore[attr-defined]

    def plan(
        self,
        num_inference_steps: int | None = None,
        device: Any = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> DDPMWuerstchenState:
        """A fresh run of ``num_inference_steps`` steps over ``linspace(1, 0, n + 1)``, or over ``timesteps``."""
        if timesteps is None:
            if num_inference_steps is None or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
            ts = torch.linspace(1.0, 0.0, num_inference_steps + 1)
        else:
            ts = timesteps.detach().cpu() if isinstance(timesteps, torch.Tensor) else torch.tensor([float(v) for v in timesteps])
            ts = ts.reshape(-1)
            if len(ts) < 2:
                raise ValueError("timesteps must list at least two times: where each step starts and where the last ends")
            if not all(math.isfinite(v) for v in ts.tolist()):
                raise ValueError(f"timesteps must be finite, got {ts.tolist()}")
        return DDPMWuerstchenState(self, ts, device)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
        device: Any = None,
    ) -> None:
        """diffusers' ``set_timesteps``, argument order included, on the default state."""
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device, timesteps))

    def previous_timestep(self, timestep: torch.Tensor) -> torch.Tensor:
        """diffusers' ``previous_timestep`` on the times of the last ``set_timesteps``."""
        return self._state().previous_timestep(timestep)  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion to times ``timesteps`` (one per batch item)."""
        ab = self.alpha_cumprod(timesteps.to(original_samples.device)).view(-1, *([1] * (original_samples.ndim - 1)))
        # x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε
        return (ab.sqrt() * original_samples + (1 - ab).sqrt() * noise).to(original_samples.dtype)
