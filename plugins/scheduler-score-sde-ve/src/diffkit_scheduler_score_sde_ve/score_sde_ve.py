"""``ScoreSdeVeScheduler``: predictor-corrector sampling of the variance-exploding SDE
(Song et al. 2021, NCSN++), with the numbers of diffusers' scheduler.

The model predicts the score ``∇ₓ log p_σ(x)``. Continuous time runs from 1 down to
``sampling_eps``; the noise level is ``σ(t) = σ_min·(σ_max/σ_min)^t``. The predictor is the
reverse-diffusion (ancestral) step between consecutive levels of a geometric ladder of ``N``
discrete noise levels; the corrector is a Langevin step whose size follows a target
signal-to-noise ratio ``snr``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from diffkit.config import Config
from diffkit.outputs import BaseOutput, SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState


@dataclasses.dataclass
class SdeVeOutput(BaseOutput):
    """A predictor step: the noisy next sample and its mean (the mean is the final image)."""

    prev_sample: torch.Tensor
    prev_sample_mean: torch.Tensor


class ScoreSdeVeConfig(Config):
    """Fields and defaults of diffusers' ``ScoreSdeVeScheduler``."""

    owner_name: ClassVar[str] = "ScoreSdeVeScheduler"

    num_train_timesteps: PositiveInt = 2000
    snr: float = Field(0.15, ge=0)
    sigma_min: float = Field(0.01, gt=0)
    sigma_max: float = Field(1348.0, gt=0)
    sampling_eps: float = Field(1e-5, gt=0, le=1)
    correct_steps: NonNegativeInt = 1

    @model_validator(mode="after")
    def _ordered(self) -> ScoreSdeVeConfig:
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})")
        return self


# -- the schedule --------------------------------------------------------------------------------
def sde_ve_timesteps(num_steps: int, sampling_eps: float, device: Any = None) -> torch.Tensor:
    # t_i = 1 + i·(ε - 1)/(N - 1), float32
    return torch.linspace(1, sampling_eps, num_steps, device=device)


def sde_ve_sigmas(timesteps: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``σ(t) = σ_min·(σ_max/σ_min)^t`` per timestep, in float32, one power per value as the reference does."""
    ratio = sigma_max / sigma_min
    return torch.stack([torch.pow(ratio, t) * sigma_min for t in timesteps.cpu()])


def sde_ve_discrete_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    # σ_k = exp(ln σ_min + k·(ln σ_max - ln σ_min)/(N - 1)): a geometric ladder, float32
    return torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), num_steps))


def reverse_diffusion_scales(discrete_sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per ladder index ``k``: ``g_k = √(σ_k² - σ_{k-1}²)`` (``σ_{-1} = 0``) and ``g_k²``."""
    below = torch.cat([torch.zeros(1, dtype=discrete_sigmas.dtype), discrete_sigmas[:-1]])
    g = (discrete_sigmas**2 - below**2) ** 0.5
    return g, g**2


def _noise_device(generator: torch.Generator | list[torch.Generator] | None) -> torch.device:
    """Where noise the reference draws on the CPU is drawn: the CPU, or an accelerator generator's device."""
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    return first.device if first is not None else torch.device("cpu")


def _per_sample(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))


class ScoreSdeVeState(SchedulerState):
    """One run: continuous timesteps, their noise levels ``sigmas`` and the discrete ladder."""

    def __init__(
        self,
        scheduler: ScoreSdeVeScheduler,
        timesteps: torch.Tensor,
        sigma_source: tuple[torch.Tensor, float, float],
        discrete_sigmas: torch.Tensor,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps, len(timesteps), init_noise_sigma=scheduler.config.sigma_max)
        #: (timesteps, σ_min, σ_max) that ``sigmas`` is computed from, on first use
        self._sigma_source = sigma_source
        self._sigmas: torch.Tensor | None = None
        self._device = device
        #: the geometric ladder the predictor steps between
        self.discrete_sigmas = discrete_sigmas
        self._scales = tuple(t.to(device) if device is not None else t for t in reverse_diffusion_scales(discrete_sigmas))
        self._config = scheduler.config

    @property
    def sigmas(self) -> torch.Tensor:
        """σ(t_i), the noise level the model is conditioned on at step i."""
        if self._sigmas is None:
            sigmas = sde_ve_sigmas(*self._sigma_source)
            self._sigmas = sigmas.to(self._device) if self._device is not None else sigmas
        return self._sigmas

    def _ladder_index(self, timestep: Any, sample: torch.Tensor) -> torch.Tensor:
        # k = ⌊t·(N-1)⌋ per batch entry, in float32 as the reference computes it
        t = timestep * torch.ones(sample.shape[0], device=sample.device)
        return (t * (len(self.timesteps) - 1)).long()

    def get_adjacent_sigma(self, timesteps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The ladder level below each index in ``timesteps`` (0 below the first)."""
        ladder = self.discrete_sigmas.to(timesteps.device)
        return torch.where(timesteps == 0, torch.zeros_like(t.to(timesteps.device)), ladder[timesteps - 1])

    def step(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "ScoreSdeVeScheduler has no single step: call step_pred (predictor) and step_correct (corrector)"
        )

    def step_pred(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SdeVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """Predictor: one reverse-diffusion step from level ``k = ⌊t·(N-1)⌋`` to ``k - 1``."""
        k = self._ladder_index(timestep, sample)
        g, g2 = (table.to(sample.device)[k] for table in self._scales)
        # x̄ = x + g_k²·s;  x_prev = x̄ + g_k·z
        mean = sample + _per_sample(g2, sample.ndim) * model_output
        noise = randn_tensor(
            sample.shape, layout=sample.layout, generator=generator, device=sample.device, dtype=sample.dtype
        )
        prev_sample = mean + _per_sample(g, sample.ndim) * noise
        if not return_dict:
            return prev_sample, mean
        return SdeVeOutput(prev_sample=prev_sample, prev_sample_mean=mean)

    def step_correct(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """Corrector: one Langevin step with step size ``ε = 2·(snr·‖z‖/‖s‖)²`` (batch-mean norms).

        The noise is drawn on the CPU (or on the generator's device) in float32, as the
        reference draws it, then moved to the sample's device.
        """
        noise = randn_tensor(
            sample.shape, layout=sample.layout, generator=generator, device=_noise_device(generator)
        ).to(sample.device)
        batch = sample.shape[0]
        grad_norm = torch.linalg.vector_norm(model_output.reshape(batch, -1), dim=-1).mean()
        noise_norm = torch.linalg.vector_norm(noise.reshape(batch, -1), dim=-1).mean()
        # ε = (snr·‖z‖/‖s‖)²·2
        step_size = (self._config.snr * noise_norm / grad_norm) ** 2 * 2
        step_size = _per_sample(step_size * torch.ones(batch, device=sample.device), sample.ndim)
        # x̄ = x + ε·s;  x' = x̄ + √(2ε)·z
        mean = sample + step_size * model_output
        prev_sample = mean + (step_size * 2) ** 0.5 * noise
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor | None, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """``x + σ_k·z`` for ladder indices ``timesteps``; ``noise=None`` draws ``z``."""
        device = original_samples.device
        sigmas = _per_sample(self.discrete_sigmas.to(device)[timesteps.to(device)], original_samples.ndim)
        noise = torch.randn_like(original_samples) if noise is None else noise
        return noise * sigmas + original_samples


class ScoreSdeVeScheduler(Scheduler):
    """Variance-exploding SDE sampler: ``step_correct`` (Langevin) and ``step_pred`` (reverse diffusion).

    ``state = scheduler.plan(n)`` gives ``n`` timesteps from 1 to ``sampling_eps``, their noise
    levels ``state.sigmas`` (what the model is conditioned on) and an ``n``-level ladder
    ``state.discrete_sigmas``; a pipeline runs ``correct_steps`` corrector steps and one
    predictor step per timestep. Numbers, random draws included, are diffusers'; where
    diffusers cannot draw the corrector's noise (a CUDA generator), it is drawn on the
    generator's device.
    """

    config_class: ClassVar[type[Config]] = ScoreSdeVeConfig
    order: ClassVar[int] = 1

    config: ScoreSdeVeConfig

    def _setup(self) -> None:
        # diffusers' scheduler starts out planned for num_train_timesteps steps
        object.__setattr__(self, "_legacy_state", self.plan(self.config.num_train_timesteps))

    def plan(
        self, num_inference_steps: int | None = None, device: Any = None, sampling_eps: float | None = None
    ) -> ScoreSdeVeState:
        """A fresh sampling state of ``num_inference_steps`` steps (``sampling_eps`` overrides the config)."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"ScoreSdeVeScheduler.plan needs num_inference_steps >= 1, got {num_inference_steps}")
        cfg = self.config
        eps = cfg.sampling_eps if sampling_eps is None else sampling_eps
        timesteps = sde_ve_timesteps(num_inference_steps, eps, device)
        ladder = sde_ve_discrete_sigmas(num_inference_steps, cfg.sigma_min, cfg.sigma_max)
        return ScoreSdeVeState(self, timesteps, (timesteps, cfg.sigma_min, cfg.sigma_max), ladder, device)

    # -- diffusers-style surface over the default state ------------------------------------
    def set_timesteps(  # type: ignore[override]
        self, num_inference_steps: int, sampling_eps: float | None = None, device: Any = None
    ) -> None:
        """New timesteps; like diffusers, the noise levels stay until :meth:`set_sigmas`."""
        eps = self.config.sampling_eps if sampling_eps is None else sampling_eps
        old: ScoreSdeVeState = self._state()  # type: ignore[assignment]
        timesteps = sde_ve_timesteps(num_inference_steps, eps, device)
        state = ScoreSdeVeState(self, timesteps, old._sigma_source, old.discrete_sigmas)
        state._sigmas = old._sigmas
        object.__setattr__(self, "_legacy_state", state)

    def set_sigmas(
        self,
        num_inference_steps: int,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        sampling_eps: float | None = None,
    ) -> None:
        """Noise levels for the current timesteps and an ``num_inference_steps``-level ladder."""
        cfg = self.config
        lo = cfg.sigma_min if sigma_min is None else sigma_min
        hi = cfg.sigma_max if sigma_max is None else sigma_max
        timesteps = self._state().timesteps
        ladder = sde_ve_discrete_sigmas(num_inference_steps, lo, hi)
        state = ScoreSdeVeState(self, timesteps, (timesteps, lo, hi), ladder)
        object.__setattr__(self, "_legacy_state", state)

    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    @property
    def discrete_sigmas(self) -> torch.Tensor:
        return self._state().discrete_sigmas  # type: ignore[attr-defined]

    @property
    def init_noise_sigma(self) -> float:
        return self.config.sigma_max

    def get_adjacent_sigma(self, timesteps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._state().get_adjacent_sigma(timesteps, t)  # type: ignore[attr-defined]

    def step_pred(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SdeVeOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``step_pred`` on the default state."""
        return self._state().step_pred(model_output, timestep, sample, generator, return_dict)  # type: ignore[attr-defined]

    def step_correct(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor]:
        """diffusers' ``step_correct`` on the default state."""
        return self._state().step_correct(model_output, sample, generator, return_dict)  # type: ignore[attr-defined]

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor | None, timesteps: torch.Tensor
    ) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)
