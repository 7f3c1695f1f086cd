"""``RePaintScheduler``: RePaint inpainting (Lugmayr et al. 2022), with the numbers of diffusers' scheduler."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.randomness import randn_tensor
from diffkit.scheduler import BetaScheduleConfig, Scheduler, SchedulerState


class RePaintConfig(BetaScheduleConfig):
    """Fields and defaults of diffusers' ``RePaintScheduler``."""

    owner_name: ClassVar[str] = "RePaintScheduler"

    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"] = "linear"
    eta: float = Field(0.0, ge=0, le=1)
    clip_sample: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RePaintConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, 0)
        return self


def resampling_schedule(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """Step indices of a RePaint run: descend, and every ``jump_length`` steps go back up
    ``jump_length`` steps, ``jump_n_sample - 1`` times per jump point (``k → k+1`` is an undo).
    """
    jumps = {j: jump_n_sample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    k, order = num_steps, []
    while k >= 1:
        k -= 1
        order.append(k)
        if jumps.get(k, 0) > 0:
            jumps[k] -= 1
            for _ in range(jump_length):
                k += 1
                order.append(k)
    return order


def check_eta(eta: float) -> None:
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")


def _step_table(scheduler: RePaintScheduler, timesteps: torch.Tensor, stride: int, eta: float) -> torch.Tensor:
    """Rows ``(√ᾱ_t, √(1-ᾱ_t), √ᾱ_prev, √(1-ᾱ_prev), σ_t, d_t)`` for a step ``t → t - stride``."""
    ab = scheduler.alphas_cumprod
    prev = timesteps - stride
    ab_t = ab[timesteps]
    ab_prev = torch.where(prev >= 0, ab[prev.clamp(min=0)], scheduler.final_alpha_cumprod)
    # σ_t = η·√((1-ᾱ_prev)/(1-ᾱ_t)·(1 - ᾱ_t/ᾱ_prev));  d_t = √(1 - ᾱ_prev - σ_t²)
    std = eta * S.posterior_variance(ab_t, ab_prev) ** 0.5
    direction = (1 - ab_prev - std**2) ** 0.5
    return torch.stack([ab_t.sqrt(), (1 - ab_t).sqrt(), ab_prev.sqrt(), (1 - ab_prev).sqrt(), std, direction])


class RePaintState(SchedulerState):
    """One RePaint run: the resampling timesteps, ``eta`` and the coefficients of each step."""

    def __init__(
        self,
        scheduler: RePaintScheduler,
        timesteps: torch.Tensor,
        num_inference_steps: int | None,
        eta: float,
        device: Any = None,
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        self._host: list[int] = timesteps.tolist()
        self._stride = scheduler.config.num_train_timesteps // num_inference_steps if num_inference_steps else 0
        self._clip = scheduler.config.clip_sample
        self._eta = float(eta)
        self._rows: dict[torch.dtype, tuple[list[tuple[float, ...]], list[tuple[float, ...]]]] = {}

    @property
    def timestep_values(self) -> list[int]:
        """The run's timesteps as Python ints (read without touching the device)."""
        return list(self._host)

    @property
    def eta(self) -> float:
        """The weight of fresh noise in the generated region (0: DDIM-like, 1: DDPM-like)."""
        return self._eta

    @eta.setter
    def eta(self, value: float) -> None:
        check_eta(value)
        self._eta = float(value)
        self._rows = {}

    def _coefficients(self, t: int, dtype: torch.dtype) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(factors, values)`` of the step from ``t``: rounded to ``dtype`` where they multiply first."""
        n_train = self.config.num_train_timesteps
        if not 0 <= t < n_train:
            raise ValueError(f"timestep must lie in [0, {n_train}), got {t}")
        k, off_grid = divmod(t, self._stride)
        if off_grid or k >= self.num_inference_steps:  # type: ignore[operator]
            table = _step_table(self.scheduler, torch.tensor([t]), self._stride, self._eta)  # type: ignore[arg-type]
            return S.scalar_rows(table, dtype)[0], S.scalar_rows(table)[0]
        rows = self._rows.get(dtype)
        if rows is None:
            grid = torch.arange(self.num_inference_steps) * self._stride  # type: ignore[arg-type]
            table = _step_table(self.scheduler, grid, self._stride, self._eta)  # type: ignore[arg-type]
            rows = self._rows[dtype] = (S.scalar_rows(table, dtype), S.scalar_rows(table))
        return rows[0][k], rows[1][k]

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        original_image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One RePaint step ``x_t → x_{t - T//N}``: a DDIM step in the unknown region and the
        forward-noised ``original_image`` where ``mask`` is 1; noise is drawn every step.
        """
        if self.num_inference_steps is None:
            raise ValueError("this RePaint state has no inference steps: call set_timesteps(n) or plan(n) first")
        t = S.timestep_value(timestep, self.timesteps, self._host)
        dtype = torch.promote_types(model_output.dtype, sample.dtype)
        factors, values = self._coefficients(t, dtype)
        _, sigma, alpha_prev, sigma_prev, std, direction = factors
        alpha = values[0]

        # x0 = (x - √(1-ᾱ_t)·ε)/√ᾱ_t, clipped to [-1, 1]
        x0 = S.x0_from_prediction(model_output, sample, alpha, sigma, "epsilon")
        if self._clip:
            x0 = x0.clamp_(-1, 1)
        noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
        # unknown = √ᾱ_prev·x0 + d_t·ε (+ σ_t·z)
        unknown = S.axpby(alpha_prev, x0, direction, model_output)
        if t > 0 and self._eta > 0:
            unknown = unknown.add_(std * noise) if _same(unknown, noise) else unknown + std * noise
        # known = √ᾱ_prev·x_orig + √(1-ᾱ_prev)·z
        known = S.axpby_into(alpha_prev, original_image, sigma_prev, noise, own_y=True)
        # x_prev = m·known + (1-m)·unknown
        keep = 1.0 - mask
        if _same(known, unknown) and _fits(mask, known):
            prev = known.mul_(mask).add_(unknown.mul_(keep))
        else:
            prev = mask * known + keep * unknown
        if not return_dict:
            return prev, x0
        return SchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def undo_step(
        self, sample: torch.Tensor, timestep: Any, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """Re-noise ``sample`` from ``timestep`` up ``T//N`` training steps, one ``β`` at a time (RePaint's jump back)."""
        if self.num_inference_steps is None:
            raise ValueError("this RePaint state has no inference steps: call set_timesteps(n) or plan(n) first")
        t = S.timestep_value(timestep, self.timesteps, self._host)
        keep, fresh = self.scheduler.undo_factors(sample.dtype)  # type: ignore[attr-defined]
        if t + self._stride > len(keep) or t < 0:
            raise ValueError(f"undo_step from timestep {t} would pass num_train_timesteps ({len(keep)})")
        for i in range(t, t + self._stride):
            noise = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            # x ← √(1-β_i)·x + √β_i·z
            sample = S.axpby_into(keep[i], sample, fresh[i], noise, own_x=i > t, own_y=True)
        return sample


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape


def _fits(mask: torch.Tensor, target: torch.Tensor) -> bool:
    """Whether ``target * mask`` has ``target``'s shape and dtype (so it may be computed in place)."""
    if mask.dim() > target.dim() or torch.promote_types(mask.dtype, target.dtype) != target.dtype:
        return False
    return all(m in (1, t) for m, t in zip(reversed(mask.shape), reversed(target.shape), strict=False))


class RePaintScheduler(Scheduler):
    """RePaint: DDIM-style steps (``eta``) that keep re-imposing the known image region, plus
    ``undo_step`` to jump back up and resample (the jumps come from ``jump_length`` and
    ``jump_n_sample`` in ``plan``/``set_timesteps``).

    Where diffusers differs: ``trained_betas`` are float32 like every other table (diffusers
    keeps the array's dtype and rejects a list, so a saved config does not load back);
    ``eta`` (config, ``plan``, or ``scheduler.eta = ...`` on the diffusers-style surface) must
    lie in ``[0, 1]``.
    """

    config_class: ClassVar[type[Config]] = RePaintConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: RePaintConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor
    final_alpha_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", S.alphas_cumprod(betas))
        object.__setattr__(self, "one", torch.tensor(1.0))
        object.__setattr__(self, "final_alpha_cumprod", torch.tensor(1.0))
        # undo_step's per-training-step factors (√(1-β), √β)
        object.__setattr__(self, "_undo", torch.stack([(1 - betas) ** 0.5, betas**0.5]))
        object.__setattr__(self, "_undo_rows", {})
        object.__setattr__(self, "_legacy_eta", cfg.eta)
        chain = torch.arange(cfg.num_train_timesteps - 1, -1, -1)
        object.__setattr__(self, "_legacy_state", RePaintState(self, chain, None, cfg.eta))

    def undo_factors(self, dtype: torch.dtype) -> tuple[list[float], list[float]]:
        """``(√(1-β_i), √β_i)`` per training step as factors for a ``dtype`` sample."""
        rows = self._undo_rows.get(dtype)
        if rows is None:
            table = self._undo.to(dtype) if dtype in (torch.float16, torch.bfloat16) else self._undo
            rows = self._undo_rows[dtype] = tuple(table.tolist())
        return rows

    def plan(
        self,
        num_inference_steps: int | None = None,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        device: Any = None,
        *,
        eta: float | None = None,
    ) -> RePaintState:
        """A fresh run of ``num_inference_steps`` (at most ``num_train_timesteps``) with resampling jumps."""
        if num_inference_steps is None or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        if jump_length < 1 or jump_n_sample < 1:
            raise ValueError(f"jump_length and jump_n_sample must be at least 1, got {jump_length} and {jump_n_sample}")
        eta = self.config.eta if eta is None else eta
        check_eta(eta)
        n_train = self.config.num_train_timesteps
        n = min(n_train, num_inference_steps)
        order = resampling_schedule(n, jump_length, jump_n_sample)
        timesteps = torch.tensor(order, dtype=torch.int64) * (n_train // n)
        return RePaintState(self, timesteps, n, eta, device)

    # -- the diffusers-style surface --------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "eta":  # diffusers' RePaintPipeline sets scheduler.eta before its loop
            check_eta(value)
            object.__setattr__(self, "_legacy_eta", float(value))
            self._legacy_state.eta = value  # type: ignore[union-attr]
            return
        super().__setattr__(name, value)

    @property
    def eta(self) -> float:
        """``eta`` of the diffusers-style surface: the config's unless assigned."""
        return self._legacy_eta

    def set_timesteps(
        self,
        num_inference_steps: int,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        device: Any = None,
    ) -> None:
        """diffusers' ``set_timesteps``, argument order included, on the default state."""
        state = self.plan(num_inference_steps, jump_length, jump_n_sample, device, eta=self._legacy_eta)
        object.__setattr__(self, "_legacy_state", state)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        original_image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """diffusers' ``RePaintScheduler.step`` on the default state."""
        return self._state().step(model_output, timestep, sample, original_image, mask, generator, return_dict)  # type: ignore[call-arg]

    def undo_step(
        self, sample: torch.Tensor, timestep: Any, generator: torch.Generator | list[torch.Generator] | None = None
    ) -> torch.Tensor:
        """diffusers' ``undo_step`` on the default state."""
        return self._state().undo_step(sample, timestep, generator)  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("RePaintScheduler does not add noise for training; use DDPMScheduler.add_noise")
