"""``DPMSolverSDEScheduler``: DPM-Solver++(2S) SDE (k-diffusion ``sample_dpmpp_sde``) with Brownian-tree noise."""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler

from .brownian import BrownianTreeNoise
from .state import SolverState, broadcast_to


class DPMSolverSDEConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``DPMSolverSDEScheduler``."""

    owner_name: ClassVar[str] = "DPMSolverSDEScheduler"

    beta_start: float = Field(0.00085, ge=0, le=1)
    beta_end: float = Field(0.012, ge=0, le=1)
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    noise_sampler_seed: int | list[int] | None = None
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0

    @model_validator(mode="after")
    def _consistent(self) -> DPMSolverSDEConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        K.chosen_sigma_schedule(self.use_karras_sigmas, self.use_exponential_sigmas, self.use_beta_sigmas)
        if self.prediction_type == "sample":
            raise ValueError("prediction_type='sample' is not supported by DPMSolverSDEScheduler: use epsilon or v_prediction")
        return self


def sde_timesteps(spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int) -> np.ndarray:
    """Descending float64 timesteps on ``N`` points."""
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, num_steps, dtype=float)[::-1].copy()
    if spacing == "leading":
        ratio = num_train_timesteps // num_steps
        return (np.arange(0, num_steps) * ratio).round()[::-1].astype(float) + steps_offset
    if spacing == "trailing":
        return np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps).round().astype(float) - 1
    raise ValueError(f"timestep_spacing {spacing!r} is unknown; allowed values: {', '.join(S.SPACINGS)}")


def midpoint_sigmas(sigmas: np.ndarray) -> np.ndarray:
    # σ_mid = exp(-(t + ½(t_next - t))), t = -ln σ
    t = -np.log(sigmas)
    return np.exp(-(t[:-1] + np.diff(t) * 0.5))


class DPMSolverSDEState(SolverState):
    """One run: interleaved sigmas (each step is a midpoint stage and a full stage), the Brownian tree."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sample: torch.Tensor | None = None
        self.mid_point_sigma: float | None = None
        self.noise_sampler: BrownianTreeNoise | None = None

    @property
    def state_in_first_order(self) -> bool:
        return self.sample is None

    @functools.cached_property
    def _stages(self) -> list[dict[str, float]]:
        """Per index: the coefficients of the stage that starts there in first-order or second-order state."""
        s = self.sigmas
        n = s.shape[0] - 1
        out: list[dict[str, float]] = []
        for first in (True, False):
            idx = torch.arange(n)
            lo = idx if first else (idx - 1).clamp(min=0)
            sigma, sigma_next = s[lo], s[lo + 1]
            t, t_next = sigma.log().neg(), sigma_next.log().neg()
            t_prop = t + (t_next - t) * 0.5
            s_in = sigma if first else t_prop.neg().exp()
            t_to = t_prop if first else t_next
            s_from, s_to = t.neg().exp(), t_to.neg().exp()
            # σ_up = min(σ_to, √(σ_to²(σ_from² - σ_to²)/σ_from²)), σ_down = √(σ_to² - σ_up²)
            s_up = torch.minimum(s_to, (s_to**2 * (s_from**2 - s_to**2) / s_from**2) ** 0.5)
            s_down = (s_to**2 - s_up**2) ** 0.5
            t_anc = s_down.log().neg()
            cols = {
                "sigma": sigma,
                "sigma_next": sigma_next,
                "s_in": s_in,
                "v_out": -s_in / (s_in**2 + 1) ** 0.5,
                "v_skip": 1 / (s_in**2 + 1),
                "c_in": (s_in**2 + 1) ** 0.5,
                # x' = σ_down/σ_from·x - expm1(t - t_anc)·x0
                "a": t_anc.neg().exp() / t.neg().exp(),
                "b": -(t - t_anc).expm1(),
                "s_up": s_up,
                "from": s_from,
                "to": s_to,
            }
            lists = {k: v.tolist() for k, v in cols.items()}
            out.extend({k: lists[k][i] for k in lists} for i in range(n))
        return out

    def _stage(self, i: int) -> dict[str, float]:
        n = self.sigmas.shape[0] - 1
        return self._stages[i if self.state_in_first_order else n + i]

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """``x/√(σ²+1)`` at the stage's σ (the midpoint σ in the second stage)."""
        i = self._start(timestep)
        return sample / self._stage(i)["c_in"]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        *,
        s_noise: float = 1.0,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One stage; noise comes from the Brownian tree seeded by ``noise_sampler_seed`` (``generator`` is unused)."""
        i = self._start(timestep)
        if self.noise_sampler is None:
            positive = self.sigmas[self.sigmas > 0]
            self.noise_sampler = BrownianTreeNoise(
                sample, positive.min().item(), self.sigmas.max().item(), self.scheduler.config.noise_sampler_seed
            )
        c = self._stage(i)
        if self.scheduler.config.prediction_type == "epsilon":
            # x0 = x - σ·ε
            x0 = torch.sub(sample, model_output, alpha=c["s_in"])
        else:
            # x0 = -σ/√(σ²+1)·v + x/(σ²+1)
            x0 = torch.mul(model_output, c["v_out"]).add_(sample, alpha=c["v_skip"])
        if c["sigma_next"] == 0:
            # Euler to σ = 0: x + (x - x0)/σ·(0 - σ)
            prev = sample + (sample - x0) / c["sigma"] * (c["sigma_next"] - c["sigma"])
        else:
            base = sample if self.state_in_first_order else self.sample
            prev = torch.mul(base, c["a"]).add_(x0, alpha=c["b"])  # type: ignore[arg-type]
            prev = prev.add_(self.noise_sampler(c["from"], c["to"]), alpha=s_noise * c["s_up"])
            if self.state_in_first_order:
                self.sample, self.mid_point_sigma = sample, c["to"]
            else:
                self.sample, self.mid_point_sigma = None, None
        self.step_index = i + 1
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + σ·ε`` at the sigmas of ``timesteps`` in this run (or at the begin/current step)."""
        sigma = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)[self._sigma_indices(timesteps)]
        return original_samples + noise * broadcast_to(sigma, original_samples.ndim)


class DPMSolverSDEScheduler(Scheduler):
    """DPM-Solver++(2S) with SDE noise: each step evaluates the model at a midpoint in ``-ln σ`` and at the end.

    Timesteps and sigmas are interleaved (order 2); the noise is a Brownian tree over σ seeded
    by ``noise_sampler_seed`` (one int, or one per batch item), so the same seed gives the same
    samples as diffusers. Where diffusers differs: ``prediction_type="sample"`` is rejected at
    construction (diffusers raises in ``step``); a first timestep that is not in the run is an error.
    """

    config_class: ClassVar[type[Config]] = DPMSolverSDEConfig
    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES
    order: ClassVar[int] = 2

    config: DPMSolverSDEConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", S.alphas_cumprod(betas))
        object.__setattr__(self, "_legacy_state", self.plan(cfg.num_train_timesteps))

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> DPMSolverSDEState:
        """A fresh run of ``num_inference_steps`` steps (``2N-1`` model evaluations)."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        cfg, n = self.config, int(num_inference_steps)
        ts = sde_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset)
        table = K.sigma_table(self.alphas_cumprod).numpy()
        log_sigmas = K.log_sigma_table(table)
        sigmas = K.sigmas_at(ts, table)
        kind = K.chosen_sigma_schedule(cfg.use_karras_sigmas, cfg.use_exponential_sigmas, cfg.use_beta_sigmas)
        if kind is not None:
            bounds = (None, None) if kind == "karras" else (cfg.get("sigma_min"), cfg.get("sigma_max"))
            sigmas = K.sigma_schedule(kind, sigmas, n, *bounds)
            ts = K.sigma_to_t(sigmas, log_sigmas)
        mids = K.sigma_to_t(midpoint_sigmas(sigmas), log_sigmas)
        s = torch.from_numpy(K.with_final_sigma(sigmas, 0.0))
        s = torch.cat([s[:1], s[1:-1].repeat_interleave(2), s[-1:]])
        t = torch.from_numpy(np.ascontiguousarray(ts))
        t = torch.cat([t[:1], t[1:].repeat_interleave(2)])
        t[1::2] = torch.from_numpy(mids)
        state = DPMSolverSDEState(self, t, s, n, device)
        spacing_max = s.max()
        state.init_noise_sigma = spacing_max if cfg.timestep_spacing in ("linspace", "trailing") else (spacing_max**2 + 1) ** 0.5
        return state

    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, num_train_timesteps: int | None = None) -> None:
        """diffusers' ``set_timesteps``: a new default run."""
        if num_train_timesteps not in (None, self.config.num_train_timesteps):
            raise ValueError("num_train_timesteps is fixed by the config")
        object.__setattr__(self, "_legacy_state", self.plan(num_inference_steps, device))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
        s_noise: float = 1.0,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``step``, argument order included, on the default run."""
        return self._state().step(model_output, timestep, sample, None, return_dict, s_noise=s_noise)  # type: ignore[call-arg]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)
