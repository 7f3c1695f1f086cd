"""``VQDiffusionScheduler``: mask-and-replace discrete diffusion (Gu et al. 2021), with diffusers' numbers.

A token keeps its class with probability ``α_t``, becomes the mask class (the last of ``K``
classes) with ``γ_t`` and any of the ``K-1`` others with ``β_t`` each; masked tokens stay
masked. Cumulative products are ``ᾱ_t, β̄_t, γ̄_t``. Everything runs in log-probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from diffkit import schedules as S
from diffkit.config import Config
from diffkit.outputs import BaseOutput
from diffkit.scheduler import Scheduler, SchedulerState


class VQDiffusionConfig(Config):
    """Fields and defaults of diffusers' ``VQDiffusionScheduler`` (``num_vec_classes`` is required)."""

    owner_name: ClassVar[str] = "VQDiffusionScheduler"

    num_vec_classes: int = Field(ge=2)
    num_train_timesteps: int = Field(100, ge=2)
    alpha_cum_start: float = Field(0.99999, gt=0, le=1)
    alpha_cum_end: float = Field(0.000009, gt=0, le=1)
    gamma_cum_start: float = Field(0.000009, ge=0, lt=1)
    gamma_cum_end: float = Field(0.99999, ge=0, lt=1)

    @model_validator(mode="after")
    def _probabilities(self) -> VQDiffusionConfig:
        for end in ("start", "end"):
            a, g = getattr(self, f"alpha_cum_{end}"), getattr(self, f"gamma_cum_{end}")
            if a + g > 1:
                raise ValueError(
                    f"alpha_cum_{end} + gamma_cum_{end} = {a + g} exceeds 1; they are probabilities of one token"
                )
        return self


@dataclasses.dataclass
class VQDiffusionSchedulerOutput(BaseOutput):
    """``prev_sample``: the class indices at the previous timestep, ``(batch, pixels)``."""

    prev_sample: Any


def keep_schedule(n: int, start: float, end: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(α_t, ᾱ_t)`` in float64: ``ᾱ`` linear from ``start`` to ``end``, then a trailing 1."""
    # ᾱ_t = start + t/(T-1)·(end - start);  α_t = ᾱ_t/ᾱ_{t-1} with ᾱ_{-1} = 1
    cum = torch.arange(n, dtype=torch.float64) / (n - 1) * (end - start) + start
    padded = torch.cat([torch.ones(1, dtype=torch.float64), cum])
    return padded[1:] / padded[:-1], torch.cat([cum, torch.ones(1, dtype=torch.float64)])


def mask_schedule(n: int, start: float, end: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(γ_t, γ̄_t)`` in float64: ``γ̄`` linear from ``start`` to ``end``, then a trailing 0."""
    # γ̄_t = start + t/(T-1)·(end - start);  1 - γ_t = (1-γ̄_t)/(1-γ̄_{t-1}) with γ̄_{-1} = 0
    cum = torch.arange(n, dtype=torch.float64) / (n - 1) * (end - start) + start
    stay = 1 - torch.cat([torch.zeros(1, dtype=torch.float64), cum])
    return 1 - stay[1:] / stay[:-1], torch.cat([cum, torch.zeros(1, dtype=torch.float64)])


def log_tables(cfg: VQDiffusionConfig) -> dict[str, torch.Tensor]:
    """``log α, log β, log γ`` per step and their cumulative forms, float32."""
    at, att = keep_schedule(cfg.num_train_timesteps, cfg.alpha_cum_start, cfg.alpha_cum_end)
    ct, ctt = mask_schedule(cfg.num_train_timesteps, cfg.gamma_cum_start, cfg.gamma_cum_end)
    others = cfg.num_vec_classes - 1
    # β_t = (1 - α_t - γ_t)/(K-1)
    bt, btt = (1 - at - ct) / others, (1 - att - ctt) / others
    named = {"at": at, "bt": bt, "ct": ct, "cumprod_at": att, "cumprod_bt": btt, "cumprod_ct": ctt}
    return {f"log_{k}": torch.log(v).float() for k, v in named.items()}


def log_onehot(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    # log one-hot (batch, K, pixels), with log 0 ≈ log 1e-30
    onehot = torch.nn.functional.one_hot(x, num_classes).permute(0, 2, 1)
    return torch.log(onehot.float().clamp(min=1e-30))


def log_transition_to(
    x_t: torch.Tensor, onehot: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, with_mask_row: bool
) -> torch.Tensor:
    """``log q(x_t | x)`` for every non-mask class ``x`` (and the mask class when ``with_mask_row``).

    ``(a, b, c)`` are ``log α, log β, log γ`` of one step or their cumulative forms.
    """
    mask_class = onehot.shape[1] - 1
    # q = α·[x = x_t] + β;  a masked x_t was reached with probability γ
    logq = (onehot[:, :-1, :] + a).logaddexp(b)
    masked = (x_t == mask_class).unsqueeze(1).expand(-1, mask_class, -1)
    logq = torch.where(masked, c, logq)
    return torch.cat((logq, onehot[:, -1:, :]), dim=1) if with_mask_row else logq


def diffuse(log_p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Push a distribution over the ``K-1`` classes through the cumulative transition to ``K`` classes."""
    batch, _, pixels = log_p.shape
    # p' = α·p + β over the classes, and γ of mass onto the mask class
    return torch.cat(((log_p + a).logaddexp(b), c.expand(batch, 1, pixels)), dim=1)


def gumbel_argmax(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A categorical draw per pixel: ``argmax(logits + g)`` with Gumbel noise ``g = -ln(-ln u)``."""
    on = generator.device if generator is not None else logits.device
    uniform = torch.rand(logits.shape, device=on, generator=generator).to(logits.device)
    gumbel = -torch.log(-torch.log(uniform + 1e-30) + 1e-30)
    return (gumbel + logits).argmax(dim=1)


class VQDiffusionState(SchedulerState):
    """One run over timesteps ``N-1 … 0`` with the log tables on the run's device."""

    def __init__(
        self, scheduler: VQDiffusionScheduler, timesteps: torch.Tensor, num_inference_steps: int | None, device: Any = None
    ) -> None:
        super().__init__(scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps)
        self._host: list[int] = timesteps.tolist()
        self._tables = {k: v.to(device) if device is not None else v for k, v in scheduler.tables.items()}  # type: ignore[attr-defined]
        self._num_classes = scheduler.config.num_vec_classes

    def q_posterior(self, log_p_x_0: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """``log p(x_{t-1} | x_t)`` (unnormalised) from the model's ``log p(x_0 | x_t)``."""
        tab = self._tables
        onehot = log_onehot(x_t, self._num_classes)
        cumulative = (tab["log_cumprod_at"][t], tab["log_cumprod_bt"][t], tab["log_cumprod_ct"][t])
        one_step = (tab["log_at"][t], tab["log_bt"][t], tab["log_ct"][t])
        from_x0 = log_transition_to(x_t, onehot, *cumulative, with_mask_row=False)
        from_prev = log_transition_to(x_t, onehot, *one_step, with_mask_row=True)
        # Bayes: p(x_{t-1}|x_t) ∝ Σ_x0 p(x0|x_t)/q(x_t|x0)·q(x_{t-1}|x0)·q(x_t|x_{t-1})
        q = log_p_x_0 - from_x0
        norm = torch.logsumexp(q, dim=1, keepdim=True)
        previous = (tab["log_cumprod_at"][t - 1], tab["log_cumprod_bt"][t - 1], tab["log_cumprod_ct"][t - 1])
        return diffuse(q - norm, *previous) + from_prev + norm

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> VQDiffusionSchedulerOutput | tuple[torch.Tensor]:
        """Draw ``x_{t-1}`` from the posterior given the model's ``log p(x_0 | x_t)`` over the
        ``K-1`` non-mask classes, shape ``(batch, K-1, pixels)``; at ``t = 0`` draw ``x_0`` itself.
        """
        t = S.timestep_value(timestep, self.timesteps, self._host)
        n_train = self.config.num_train_timesteps
        if not 0 <= t < n_train:
            raise ValueError(f"timestep must lie in [0, {n_train}), got {t}")
        log_p = model_output if t == 0 else self.q_posterior(model_output, sample, t)
        prev = gumbel_argmax(log_p, generator)
        if not return_dict:
            return (prev,)
        return VQDiffusionSchedulerOutput(prev_sample=prev)


class VQDiffusionScheduler(Scheduler):
    """VQ-Diffusion's discrete sampler over codebook indices with a mask class (``K-1``).

    ``plan(n)`` walks the timesteps ``n-1 … 0`` of the training schedule (as diffusers does).
    Where diffusers differs: ``n`` outside ``[1, num_train_timesteps]`` raises ``ValueError``,
    and a CPU generator also drives a run on another device.
    """

    config_class: ClassVar[type[Config]] = VQDiffusionConfig
    compatibles_names: ClassVar[tuple[str, ...]] = ()
    order: ClassVar[int] = 1

    config: VQDiffusionConfig
    tables: dict[str, torch.Tensor]

    def _setup(self) -> None:
        tables = log_tables(self.config)
        object.__setattr__(self, "tables", tables)
        for name, table in tables.items():
            object.__setattr__(self, name, table)
        object.__setattr__(self, "num_embed", self.config.num_vec_classes)
        object.__setattr__(self, "mask_class", self.config.num_vec_classes - 1)
        chain = torch.arange(self.config.num_train_timesteps - 1, -1, -1)
        object.__setattr__(self, "_legacy_state", VQDiffusionState(self, chain, None))

    def plan(self, num_inference_steps: int | None = None, device: Any = None) -> VQDiffusionState:
        """A fresh run of ``num_inference_steps`` steps: timesteps ``n-1 … 0``."""
        n_train = self.config.num_train_timesteps
        if num_inference_steps is None or not 1 <= num_inference_steps <= n_train:
            raise ValueError(
                f"num_inference_steps must lie in [1, num_train_timesteps={n_train}], got {num_inference_steps}"
            )
        return VQDiffusionState(self, torch.arange(num_inference_steps - 1, -1, -1), num_inference_steps, device)

    def q_posterior(self, log_p_x_0: torch.Tensor, x_t: torch.Tensor, t: Any) -> torch.Tensor:
        """diffusers' ``q_posterior`` on the default state."""
        state = self._state()
        return state.q_posterior(log_p_x_0, x_t, S.timestep_value(t, state.timesteps, state._host))  # type: ignore[attr-defined]
