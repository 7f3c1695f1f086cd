"""What the sigma-space (k-diffusion) schedulers share: config fields, tables, step-index bookkeeping.

These schedulers sample a VP model in its variance-exploding form ``x = x0 + σ·ε``: the model
sees ``x/√(σ²+1)`` and each run walks a descending list of sigmas that ends at the final sigma.
The concrete schedulers (Euler, Euler ancestral, Heun, LMS, DPM-2, ...) add their plan and step
rule; the plugins diffkit-scheduler-heun, -lms and -kdpm2 build on this module too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import NonNegativeInt, model_validator

from diffkit import schedules as S
from diffkit import sigmas as K
from diffkit.config import Config
from diffkit.outputs import SchedulerOutput
from diffkit.scheduler import KARRAS_COMPATIBLES, BetaScheduleConfig, Scheduler, SchedulerState

logger = logging.getLogger("diffkit.schedulers")

def declared(config: Config, name: str, default: Any = None) -> Any:
    """A field the config's class declares; keys merely carried over from another class do not count."""
    return getattr(config, name) if name in type(config).model_fields else default


def optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


class SigmaConfig(BetaScheduleConfig):
    """Training-schedule fields of the sigma-space schedulers (the defaults are Euler's)."""

    prediction_type: S.PredictionType = "epsilon"
    timestep_spacing: S.Spacing = "linspace"
    steps_offset: NonNegativeInt = 0

    @model_validator(mode="after")
    def _consistent(self) -> SigmaConfig:
        S.check_train_schedule(self.num_train_timesteps, self.trained_betas, self.steps_offset)
        K.chosen_sigma_schedule(
            declared(self, "use_karras_sigmas"),
            declared(self, "use_exponential_sigmas"),
            declared(self, "use_beta_sigmas"),
        )
        return self


def reject_integer_timestep(timestep: Any, owner: str) -> None:
    """Catch ``enumerate`` indices passed as timesteps: these schedulers take ``state.timesteps`` values."""
    if isinstance(timestep, int) or (isinstance(timestep, torch.Tensor) and not timestep.is_floating_point()):
        raise ValueError(
            f"{owner}.step got the integer timestep {timestep!r}; pass an element of state.timesteps "
            "(an index from enumerate(timesteps) is not a timestep)"
        )


def f32(x: float) -> float:
    """``x`` rounded to float32, as a Python float."""
    return float(np.float32(x))


class SigmaState(SchedulerState):
    """One sampling run over ``sigmas`` (kept on the CPU, as diffusers keeps them).

    ``step_index`` is found on the first ``scale_model_input``/``step``: ``begin_index`` when
    set; else the position of ``timestep`` when it is an element of ``timesteps`` (what
    iterating yields); else the timestep's value is looked up, taking the second match when it
    occurs twice, as diffusers does (so img2img that starts mid-schedule does not repeat a
    noise level). Looking at the position first means that duplicate timesteps at the start of
    a plan (σ_max above the training range with Karras sigmas, say) start the run at 0, where
    diffusers starts at 1 and later runs past the end of its sigmas.
    """

    owner: ClassVar[str] = "scheduler"

    def __init__(
        self,
        scheduler: SigmaScheduler,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
        init_noise_sigma: float | torch.Tensor | None = None,
    ) -> None:
        on_device = timesteps.to(device) if device is not None else timesteps
        if init_noise_sigma is None:
            init_noise_sigma = scheduler.noise_sigma_for(sigmas)
        super().__init__(scheduler, on_device, num_inference_steps, init_noise_sigma)
        self._cpu_timesteps = timesteps
        self.sigmas = sigmas
        self._sigma = sigmas.tolist()
        # √(σ²+1) in float32: scale_model_input divides by it
        self._input_divisor = ((sigmas**2 + 1) ** 0.5).tolist()
        self._scaled = False

    # -- step index --------------------------------------------------------------------
    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        """Where ``timestep`` occurs in the schedule; the second match when it occurs more than once."""
        schedule = self._cpu_timesteps if schedule_timesteps is None else schedule_timesteps.cpu()
        value = timestep.cpu() if isinstance(timestep, torch.Tensor) else timestep
        matches = (schedule == value).nonzero().flatten().tolist()
        if not matches:
            raise ValueError(f"timestep {float(value)!r} is not one of this run's timesteps")
        return matches[1] if len(matches) > 1 else matches[0]

    def _start(self, timestep: Any) -> int:
        """The current step index, found from ``timestep`` on the first call."""
        i = self.step_index
        if i is None:
            if timestep is None and self.begin_index is None:
                raise ValueError(f"{self.owner}: the first call of a run needs the timestep (or set_begin_index first)")
            if self.begin_index is not None:
                i = self.begin_index
            else:
                i = S.view_position(timestep, self.timesteps) if isinstance(timestep, torch.Tensor) else None
                if i is None:
                    i = self.index_for_timestep(timestep)
            self.step_index = i
        return i

    def _input_divisor_at(self, i: int) -> float:
        return self._input_divisor[i]

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The model input ``x/√(σ²+1)`` at the current step."""
        i = self._start(timestep)
        self._scaled = True
        # x_in = x/√(σ²+1)
        return torch.div(sample, self._input_divisor_at(i))

    def _warn_unscaled(self) -> None:
        if not self._scaled:
            self._scaled = True
            logger.warning(
                "%s: step was called without scale_model_input first; the model must see "
                "state.scale_model_input(x, t) to denoise correctly",
                self.owner,
            )

    def _past_end(self, i: int) -> IndexError:
        return IndexError(f"{self.owner}: step index {i} is past the end of this run ({len(self.timesteps)} timesteps)")

    # -- forward process ---------------------------------------------------------------
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``x0 + σ·ε`` with σ at ``timesteps`` (the begin or current step once either is known)."""
        steps = torch.as_tensor(timesteps).reshape(-1)
        if self.begin_index is None:
            indices = [self.index_for_timestep(t) for t in steps]
        else:
            indices = [self.step_index if self.step_index is not None else self.begin_index] * steps.shape[0]
        sigma = self.sigmas.to(device=original_samples.device, dtype=original_samples.dtype)[indices]
        sigma = sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))
        # x = x0 + σ·ε
        return original_samples + noise * sigma


class SigmaScheduler(Scheduler):
    """Base of the sigma-space schedulers: betas, ``ᾱ`` and the σ table, and a default run for the diffusers API."""

    compatibles_names: ClassVar[tuple[str, ...]] = KARRAS_COMPATIBLES

    config: SigmaConfig
    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    def _setup(self) -> None:
        cfg = self.config
        betas = S.make_betas(
            cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.trained_betas
        )
        zero_snr = bool(declared(cfg, "rescale_betas_zero_snr", False))
        if zero_snr:
            betas = S.rescale_zero_terminal_snr(betas)
        alphas_cumprod = S.alphas_cumprod(betas)
        if zero_snr:
            alphas_cumprod = K.patch_zero_terminal_snr(alphas_cumprod)
        table = K.sigma_table(alphas_cumprod)
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas", 1.0 - betas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        object.__setattr__(self, "_sigma_table", table)
        object.__setattr__(self, "_log_sigmas", K.log_sigma_table(table))
        object.__setattr__(self, "_legacy_state", self._initial_state())

    def _initial_state(self) -> SigmaState:
        """The run diffusers has before ``set_timesteps``."""
        raise NotImplementedError

    # -- planning helpers ----------------------------------------------------------------
    @property
    def sigma_schedule_kind(self) -> str | None:
        """``"karras"``, ``"exponential"``, ``"beta"`` or ``None``, from the ``use_*_sigmas`` fields."""
        cfg = self.config
        return K.chosen_sigma_schedule(
            declared(cfg, "use_karras_sigmas"),
            declared(cfg, "use_exponential_sigmas"),
            declared(cfg, "use_beta_sigmas"),
        )

    def sigma_bounds_override(self, kind: str) -> tuple[float | None, float | None]:
        """``sigma_min``/``sigma_max`` from the config (also when carried over from a swapped config)."""
        return optional_float(self.config.get("sigma_min")), optional_float(self.config.get("sigma_max"))

    def check_custom_timesteps(self, kind: str | None) -> None:
        if kind is not None:
            raise ValueError(f"custom timesteps cannot be combined with use_{kind}_sigmas=True; pass sigmas or neither")

    def reschedule(self, sigmas: np.ndarray, timesteps: np.ndarray, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Apply the Karras/exponential/beta schedule, if configured, and recompute the timesteps from it."""
        kind = self.sigma_schedule_kind
        if kind is None:
            return sigmas, timesteps
        lo, hi = self.sigma_bounds_override(kind)
        sigmas = K.sigma_schedule(kind, sigmas, num_steps, lo, hi)
        return sigmas, K.sigma_to_t(sigmas, self._log_sigmas)

    def noise_sigma_for(self, sigmas: torch.Tensor) -> torch.Tensor:
        """The initial-noise multiplier: ``σ_max``, or ``√(σ_max²+1)`` with ``leading`` spacing.

        A 0-d tensor on the sigmas' device, as diffusers gives (code calls ``.to()`` on it).
        """
        top = sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return top
        # √(σ_max²+1)
        return (top**2 + 1) ** 0.5

    # -- the diffusers-style surface (``set_timesteps`` mirrors each subclass's ``plan``) --
    @property
    def sigmas(self) -> torch.Tensor:
        return self._state().sigmas  # type: ignore[attr-defined]

    def index_for_timestep(self, timestep: Any, schedule_timesteps: torch.Tensor | None = None) -> int:
        return self._state().index_for_timestep(timestep, schedule_timesteps)  # type: ignore[attr-defined]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._state().add_noise(original_samples, noise, timesteps)


def as_float_array(values: Sequence[float] | torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """Custom timesteps or sigmas as a 1-D float32 array; ``ValueError`` naming ``name`` when unusable."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1).astype(np.float32)
    if array.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


def check_custom_sigmas(sigmas: np.ndarray) -> None:
    """Custom sigmas end with the final sigma: at least two values, all ≥ 0, all but the last > 0."""
    if sigmas.size < 2:
        raise ValueError(f"sigmas must hold at least two values (the last is the final sigma), got {sigmas.tolist()}")
    if (sigmas[:-1] <= 0).any() or sigmas[-1] < 0:
        raise ValueError(f"sigmas must be positive (the final one may be 0), got {sigmas.tolist()}")


def check_step_count(num_inference_steps: int | None, timesteps: Any, sigmas: Any = None) -> None:
    """Exactly one of ``num_inference_steps``, ``timesteps``, ``sigmas``."""
    given = [
        n
        for n, v in (("num_inference_steps", num_inference_steps), ("timesteps", timesteps), ("sigmas", sigmas))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "pass exactly one of num_inference_steps, timesteps or sigmas"
            + (f"; got {', '.join(given)}" if given else "")
        )
    if num_inference_steps is not None and int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps must be at least 1, got {num_inference_steps}")


def output(
    prev_sample: torch.Tensor, x0: torch.Tensor, return_dict: bool
) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
    return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0) if return_dict else (prev_sample, x0)


# -- step maths shared by the sigma-space samplers ---------------------------------------------
def v_factors(sigmas: torch.Tensor) -> list[tuple[float, float, float, float]]:
    """Per σ, ``(a, b, c1, c2)``: diffusers' float32 factors of the v-prediction denoiser ``x0 = a·v + x/b``
    and the float64 factors of its slope ``d = (x - x0)/σ = c1·x + c2·v``, which has no cancellation.
    """
    # a = -σ/√(σ²+1), b = σ²+1
    a, b = (-sigmas / (sigmas**2 + 1) ** 0.5).tolist(), (sigmas**2 + 1).tolist()
    s = sigmas.double()
    # c1 = σ/(σ²+1), c2 = 1/√(σ²+1)
    c1, c2 = (s / (s**2 + 1)).tolist(), (1 / (s**2 + 1).sqrt()).tolist()
    return list(zip(a, b, c1, c2, strict=True))


def denoised(
    model_output: torch.Tensor, sample: torch.Tensor, sigma: float, v: tuple[float, ...], prediction_type: str
) -> torch.Tensor:
    """The clean-sample estimate at noise level σ; ``v`` is :func:`v_factors` at σ."""
    if prediction_type == "epsilon":
        # x0 = x - σ·ε
        return torch.add(sample, model_output, alpha=-sigma)
    if prediction_type == "v_prediction":
        # x0 = x/(σ²+1) - σ/√(σ²+1)·v
        return torch.div(sample, v[1]).add_(model_output, alpha=v[0])
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use epsilon, sample or v_prediction")


def slope(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    x0: torch.Tensor,
    sigma: float,
    v: tuple[float, ...],
    prediction_type: str,
    from_output: bool = True,
) -> torch.Tensor:
    """``d = (x - x0)/σ``, the probability-flow ODE's ``dx/dσ``.

    With ``from_output`` (x0 not clipped) it comes from the model output directly, without the
    cancellation of ``x - x0`` at small σ: ``ε`` itself (returned as is, not copied), or
    ``c1·x + c2·v``.
    """
    if from_output and prediction_type == "epsilon":
        return model_output
    if from_output and prediction_type == "v_prediction":
        # d = σ/(σ²+1)·x + 1/√(σ²+1)·v
        return torch.mul(sample, v[2]).add_(model_output, alpha=v[3])
    # d = (x - x0)/σ
    return torch.sub(sample, x0).div_(sigma)
