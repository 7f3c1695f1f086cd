"""Pure schedule maths shared by the discrete-time (variance-preserving) schedulers.

Notation: ``T`` training timesteps, ``N`` inference steps, ``β`` betas, ``ᾱ_t = Π(1-β)``
(``alphas_cumprod``), and the VP form ``x_t = α_t·x0 + σ_t·ε`` with ``α_t = √ᾱ_t``,
``σ_t = √(1-ᾱ_t)``. Tables are float32 tensors and every step formula performs the same
operations in the same order as the reference implementation (no fused multiply-adds), so results
agree to the bit. Per-step scalars may be Python floats, precomputed once per run, or tensors that
broadcast against the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

Scalar = float | torch.Tensor

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace", "exp"]
Spacing = Literal["leading", "trailing", "linspace"]
PredictionType = Literal["epsilon", "sample", "v_prediction"]
VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]

BETA_SCHEDULES: tuple[str, ...] = BetaSchedule.__args__
SPACINGS: tuple[str, ...] = Spacing.__args__
PREDICTION_TYPES: tuple[str, ...] = PredictionType.__args__
VARIANCE_TYPES: tuple[str, ...] = VarianceType.__args__

#: the smallest posterior variance DDPM keeps, so that its logarithm stays finite
MIN_VARIANCE = 1e-20


# -- betas ---------------------------------------------------------------------------------
def linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    # β_i = β0 + (β1 - β0)·i/(T-1)
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)


def scaled_linear_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    # β_i = (√β0 + (√β1 - √β0)·i/(T-1))²
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2


def sigmoid_betas(beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    # β_i = sigmoid(-6 + 12·i/(T-1))·(β1 - β0) + β0
    return torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps)) * (beta_end - beta_start) + beta_start


def cosine_alpha_bar(t: float) -> float:
    # ᾱ(t) = cos²((t + 0.008)/1.008 · π/2)
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def exp_alpha_bar(t: float) -> float:
    # ᾱ(t) = e^(-12t)
    return math.exp(-12.0 * t)


def laplace_alpha_bar(t: float) -> float:
    # λ = -½·sgn(½ - t)·ln(1 - 2|½ - t| + 1e-6);  ᾱ(t) = √(e^λ / (1 + e^λ))
    lam = -0.5 * math.copysign(1.0, 0.5 - t) * math.log(1 - 2 * abs(0.5 - t) + 1e-6)
    snr = math.exp(lam)
    return math.sqrt(snr / (1 + snr))


ALPHA_BARS: dict[str, Callable[[float], float]] = {
    "cosine": cosine_alpha_bar,
    "exp": exp_alpha_bar,
    "laplace": laplace_alpha_bar,
}


def alpha_bar_betas(
    num_train_timesteps: int,
    alpha_bar: str | Callable[[float], float] = "cosine",
    max_beta: float = 0.999,
) -> torch.Tensor:
    """Betas that discretise a continuous ``ᾱ(t)`` on ``t ∈ [0, 1]``."""
    fn = ALPHA_BARS[alpha_bar] if isinstance(alpha_bar, str) else alpha_bar
    n = num_train_timesteps
    # β_i = min(1 - ᾱ((i+1)/T)/ᾱ(i/T), max_beta)
    betas = [min(1 - fn((i + 1) / n) / fn(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    trained_betas: Sequence[float] | None = None,
) -> torch.Tensor:
    """The float32 betas of a named schedule; ``trained_betas`` wins when given."""
    if trained_betas is not None:
        return torch.tensor(list(trained_betas), dtype=torch.float32)
    if beta_schedule == "linear":
        return linear_betas(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "scaled_linear":
        return scaled_linear_betas(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "sigmoid":
        return sigmoid_betas(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "squaredcos_cap_v2":
        return alpha_bar_betas(num_train_timesteps, "cosine")
    if beta_schedule in ("laplace", "exp"):
        return alpha_bar_betas(num_train_timesteps, beta_schedule)
    raise ValueError(f"beta_schedule {beta_schedule!r} is unknown; allowed values: {', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Alg. 1: shift and scale ``√ᾱ`` so that ``ᾱ_{T-1} = 0`` and ``ᾱ_0`` is kept."""
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    # √ᾱ' = (√ᾱ - √ᾱ_{T-1})·√ᾱ_0/(√ᾱ_0 - √ᾱ_{T-1})
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    ab = sqrt_ab**2
    # β'_t = 1 - ᾱ'_t/ᾱ'_{t-1}, β'_0 = 1 - ᾱ'_0
    return 1 - torch.cat([ab[:1], ab[1:] / ab[:-1]])


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    # ᾱ_t = Π_{s≤t} (1 - β_s)
    return torch.cumprod(1.0 - betas, dim=0)


def check_train_schedule(num_train_timesteps: int, trained_betas: Sequence[float] | None, steps_offset: int) -> None:
    """Raise ``ValueError`` naming the fields when training-schedule fields disagree."""
    if trained_betas is not None and len(trained_betas) != num_train_timesteps:
        raise ValueError(
            f"trained_betas has {len(trained_betas)} values but num_train_timesteps is {num_train_timesteps}; "
            "they must agree"
        )
    if steps_offset >= num_train_timesteps:
        raise ValueError(
            f"steps_offset ({steps_offset}) must be smaller than num_train_timesteps ({num_train_timesteps})"
        )


# -- timestep spacing ------------------------------------------------------------------------
def leading_timesteps(num_train_timesteps: int, num_steps: int, steps_offset: int = 0) -> torch.Tensor:
    # t_i = (N-1-i)·⌊T/N⌋ + offset
    ratio = num_train_timesteps // num_steps
    return torch.arange(num_steps - 1, -1, -1, dtype=torch.int64) * ratio + steps_offset


def trailing_timesteps(num_train_timesteps: int, num_steps: int) -> torch.Tensor:
    """Exactly ``N`` values; the reference's ``arange`` occasionally yields an extra ``-1``."""
    t = float(num_train_timesteps)
    delta = (t - t / num_steps) - t
    # t_i = round(T + i·δ) - 1 with δ = (T - T/N) - T (the stride rule of a float arange)
    return torch.round(t + torch.arange(num_steps, dtype=torch.float64) * delta).to(torch.int64) - 1


def linspace_timesteps(num_train_timesteps: int, num_steps: int, integer: bool = True) -> torch.Tensor:
    """Evenly spaced from ``T-1`` down to 0; rounded to int64, or float32 with ``integer=False``."""
    last = float(num_train_timesteps - 1)
    if num_steps == 1:
        grid = torch.zeros(1, dtype=torch.float64)
    else:
        # t_i = i·(T-1)/(N-1), the last point set to T-1 exactly; then reversed
        grid = torch.arange(num_steps, dtype=torch.float64) * (last / (num_steps - 1))
        grid[-1] = last
    grid = grid.flip(0)
    return torch.round(grid).to(torch.int64) if integer else grid.to(torch.float32)


def spaced_timesteps(
    spacing: str, num_train_timesteps: int, num_steps: int, steps_offset: int = 0, integer: bool = True
) -> torch.Tensor:
    """Descending inference timesteps for ``spacing`` (``leading`` adds ``steps_offset``)."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps must be between 1 and num_train_timesteps ({num_train_timesteps}), got {num_steps}"
        )
    if spacing == "leading":
        ts = leading_timesteps(num_train_timesteps, num_steps, steps_offset)
        if int(ts[0]) >= num_train_timesteps:
            raise ValueError(
                f"timestep_spacing='leading' with steps_offset={steps_offset} and num_inference_steps={num_steps} "
                f"reaches timestep {int(ts[0])}, past num_train_timesteps-1 ({num_train_timesteps - 1}); "
                "use fewer steps, a smaller steps_offset, or 'trailing'/'linspace' spacing"
            )
        return ts if integer else ts.to(torch.float32)
    if spacing == "trailing":
        ts = trailing_timesteps(num_train_timesteps, num_steps)
        return ts if integer else ts.to(torch.float32)
    if spacing == "linspace":
        return linspace_timesteps(num_train_timesteps, num_steps, integer)
    raise ValueError(f"timestep_spacing {spacing!r} is unknown; allowed values: {', '.join(SPACINGS)}")


def check_timesteps(timesteps: Sequence[int] | torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
    """Validate custom timesteps (strictly descending, within ``[0, T)``) as an int64 tensor."""
    ts = torch.as_tensor(timesteps).to("cpu", torch.int64).flatten()
    if ts.numel() == 0:
        raise ValueError("timesteps must not be empty")
    if ts.numel() > 1 and not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"timesteps must be strictly descending, got {ts.tolist()}")
    if int(ts[0]) >= num_train_timesteps or int(ts[-1]) < 0:
        raise ValueError(
            f"timesteps must lie in [0, num_train_timesteps={num_train_timesteps}), got {int(ts[0])}…{int(ts[-1])}"
        )
    return ts


# -- prediction types ------------------------------------------------------------------------
def _is_num(x: object) -> bool:
    return type(x) is float or type(x) is int


def axpby(a: Scalar, x: torch.Tensor, b: Scalar, y: torch.Tensor) -> torch.Tensor:
    """``a·x + b·y`` rounded exactly as the plain expression, reusing the first product's buffer."""
    if x.dtype == y.dtype and x.shape == y.shape and _is_num(a) and _is_num(b):
        return torch.mul(x, a).add_(torch.mul(y, b))
    return a * x + b * y


def _sub_div(x: torch.Tensor, b: Scalar, y: torch.Tensor, c: Scalar) -> torch.Tensor:
    # (x - b·y)/c
    if x.dtype == y.dtype and x.shape == y.shape and _is_num(b) and _is_num(c):
        by = torch.mul(y, b)
        return torch.sub(x, by, out=by).div_(c)
    return (x - b * y) / c


def x0_from_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha: Scalar, sigma: Scalar, prediction_type: str
) -> torch.Tensor:
    """The clean-sample estimate from a model output; ``model_output`` itself for ``sample``."""
    if prediction_type == "epsilon":
        # x0 = (x - σ·ε)/α
        return _sub_div(sample, sigma, model_output, alpha)
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        # x0 = α·x - σ·v
        return axpby(alpha, sample, -sigma, model_output)
    raise ValueError(f"prediction_type {prediction_type!r} is unknown; allowed values: {', '.join(PREDICTION_TYPES)}")


def eps_from_x0(x0: torch.Tensor, sample: torch.Tensor, alpha: Scalar, sigma: Scalar) -> torch.Tensor:
    # ε = (x - α·x0)/σ
    return _sub_div(sample, alpha, x0, sigma)


def eps_from_prediction(
    model_output: torch.Tensor, sample: torch.Tensor, alpha: Scalar, sigma: Scalar, prediction_type: str
) -> torch.Tensor:
    """The noise estimate from a model output; ``model_output`` itself for ``epsilon``."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return eps_from_x0(model_output, sample, alpha, sigma)
    if prediction_type == "v_prediction":
        # ε = α·v + σ·x
        return axpby(alpha, model_output, sigma, sample)
    raise ValueError(f"prediction_type {prediction_type!r} is unknown; allowed values: {', '.join(PREDICTION_TYPES)}")


def bound_x0(
    x0: torch.Tensor, threshold: tuple[float, float] | None, clip_range: float | None, inplace: bool = False
) -> torch.Tensor:
    """Dynamic thresholding with ``threshold = (ratio, max_value)``, else clipping to ``±clip_range``."""
    if threshold is not None:
        return dynamic_threshold(x0, *threshold)
    if clip_range is not None:
        # x0 ← clamp(x0, -r, r)
        return x0.clamp_(-clip_range, clip_range) if inplace else x0.clamp(-clip_range, clip_range)
    return x0


def row_quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(rows, q, dim=1)`` bit for bit (linear interpolation, NaN rows give NaN).

    A partial sort of the shorter tail replaces the full sort: thresholding asks for q near 1.
    """
    n = rows.shape[1]
    # rank = q·(n-1) in the rows' dtype; the quantile lies between the lo-th and hi-th smallest
    rank = torch.tensor(q, dtype=rows.dtype) * (n - 1)
    lo, hi = int(rank), int(torch.ceil(rank))
    weight = (rank - lo).item()
    if n - lo <= hi + 1:
        top = torch.topk(rows, n - lo, dim=1).values
        below, above = top[:, n - 1 - lo], top[:, n - 1 - hi]
    else:
        bottom = torch.topk(rows, hi + 1, dim=1, largest=False).values
        below, above = bottom[:, lo], bottom[:, hi]
    return below.lerp(above, weight).masked_fill_(rows.isnan().any(dim=1), math.nan)


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Imagen dynamic thresholding per sample, computed in float32 at least."""
    dtype = x0.dtype
    flat = x0.reshape(x0.shape[0], -1)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    # s = clamp(quantile(|x0|, ratio), 1, max_value)
    s = row_quantile(flat.abs(), ratio).clamp(1, max_value).unsqueeze(1)
    # x0 ← clamp(x0, -s, s)/s
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(dtype)


# -- forward process ---------------------------------------------------------------------------
def _per_sample(table: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    return table[timesteps].reshape(-1, *([1] * (ndim - 1)))


def add_noise(
    alphas_cumprod: torch.Tensor, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Forward diffusion to ``timesteps`` (one per batch item, or one for all)."""
    ab = alphas_cumprod.to(device=original.device, dtype=original.dtype)
    t = torch.as_tensor(timesteps, device=original.device)
    # x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε
    return _per_sample(ab**0.5, t, original.ndim) * original + _per_sample((1 - ab) ** 0.5, t, original.ndim) * noise


def velocity(
    alphas_cumprod: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The v-prediction target."""
    ab = alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
    t = torch.as_tensor(timesteps, device=sample.device)
    # v = √ᾱ_t·ε - √(1-ᾱ_t)·x0
    return _per_sample(ab**0.5, t, sample.ndim) * noise - _per_sample((1 - ab) ** 0.5, t, sample.ndim) * sample


# -- variances ---------------------------------------------------------------------------------
def posterior_variance(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    # β̃_t = (1-ᾱ_prev)/(1-ᾱ_t)·(1 - ᾱ_t/ᾱ_prev)
    return (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)


def step_beta(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    # β_t = 1 - ᾱ_t/ᾱ_prev (the beta of a possibly skipping step)
    return 1 - alpha_bar_t / alpha_bar_prev


def ddpm_posterior_coefficients(
    alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights of ``x0`` and ``x_t`` in the posterior mean ``μ̃_t``."""
    ratio = alpha_bar_t / alpha_bar_prev
    # μ̃_t = √ᾱ_prev·β_t/(1-ᾱ_t)·x0 + √(ᾱ_t/ᾱ_prev)·(1-ᾱ_prev)/(1-ᾱ_t)·x_t
    return alpha_bar_prev**0.5 * (1 - ratio) / (1 - alpha_bar_t), ratio**0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t)


def ddpm_noise_std(alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor, variance_type: str) -> torch.Tensor:
    """Noise scale of an ancestral DDPM step for the fixed variance types."""
    small = posterior_variance(alpha_bar_t, alpha_bar_prev).clamp(min=MIN_VARIANCE)
    if variance_type == "fixed_small":
        # σ = √β̃_t
        return small.sqrt()
    if variance_type == "fixed_small_log":
        # σ = exp(½·ln β̃_t)
        return torch.exp(0.5 * torch.log(small))
    if variance_type == "fixed_large":
        # σ = √β_t
        return step_beta(alpha_bar_t, alpha_bar_prev).sqrt()
    if variance_type == "fixed_large_log":
        # σ = exp(½·ln β_t)
        return torch.exp(0.5 * torch.log(step_beta(alpha_bar_t, alpha_bar_prev)))
    raise ValueError(
        f"variance_type {variance_type!r} is not a fixed variance; fixed ones: "
        "fixed_small, fixed_small_log, fixed_large, fixed_large_log"
    )


def ddpm_log_variance_bounds(
    alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    # (ln β̃_t, ln β_t): the range a learned_range output interpolates
    small = posterior_variance(alpha_bar_t, alpha_bar_prev).clamp(min=MIN_VARIANCE)
    return torch.log(small), torch.log(step_beta(alpha_bar_t, alpha_bar_prev))


def learned_range_std(predicted: torch.Tensor, min_log: float, max_log: float) -> torch.Tensor:
    frac = (predicted + 1) / 2
    # σ = exp(½·(f·ln β_t + (1-f)·ln β̃_t)), f = (v+1)/2
    return torch.exp(0.5 * (frac * max_log + (1 - frac) * min_log))


def ddim_noise_terms(
    eta: float, sqrt_variance: torch.Tensor, alpha_bar_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM's noise scale ``σ_t`` and the weight ``d_t`` of ``ε`` for a given ``eta``."""
    # σ_t = η·√σ²(η=1);  d_t = √(1 - ᾱ_prev - σ_t²)
    std = eta * sqrt_variance
    return std, (1 - alpha_bar_prev - std**2) ** 0.5


# -- timestep lookup -------------------------------------------------------------------------
def view_position(timestep: torch.Tensor, timesteps: torch.Tensor) -> int | None:
    """``i`` when ``timestep`` is the 0-d view ``timesteps[i]`` (what iterating yields), else ``None``.

    Reads only tensor metadata, so it never waits for an accelerator.
    """
    if timestep.dim() != 0 or timestep.dtype != timesteps.dtype or timestep.device != timesteps.device:
        return None
    if timestep.untyped_storage() is not timesteps.untyped_storage():  # torch keeps one Python object per storage
        return None
    i, rest = divmod(timestep.storage_offset() - timesteps.storage_offset(), timesteps.stride(0) or 1)
    return i if rest == 0 and 0 <= i < timesteps.shape[0] else None


def listed_after(timesteps: torch.Tensor, position: int) -> torch.Tensor:
    """The timestep listed after ``position``, a 0-d tensor; ``tensor(-1)`` after the last.

    diffusers' ``previous_timestep`` of a planned run.
    """
    return timesteps[position + 1] if position + 1 < len(timesteps) else torch.tensor(-1)


def timestep_value(timestep: object, timesteps: torch.Tensor, host_timesteps: Sequence[int]) -> int:
    """``timestep`` as a Python int, without a device read when it is an element of ``timesteps``."""
    if isinstance(timestep, torch.Tensor):
        if timestep.device.type != "cpu":
            i = view_position(timestep, timesteps)
            if i is not None:
                return host_timesteps[i]
        if timestep.numel() != 1:
            raise ValueError(f"timestep must be a single value, got a tensor of shape {tuple(timestep.shape)}")
        timestep = timestep.item()
    value = int(timestep)  # type: ignore[call-overload]
    if value != timestep:
        raise ValueError(f"timestep must be an integer, got {timestep!r}")
    return value


def first_step_index(timestep: object, timesteps: torch.Tensor, host_timesteps: Sequence[float]) -> int:
    """Where a run that counts its own steps starts when first stepped at ``timestep``.

    The value is looked up in the run's timesteps, compared in their dtype; when it occurs more
    than once the second occurrence is taken, so that resuming in the middle of a schedule does
    not repeat a noise level. Reads the device only when ``timestep`` is not an element of
    ``timesteps``.
    """
    if isinstance(timestep, torch.Tensor):
        i = view_position(timestep, timesteps)
        if i is not None:
            value = host_timesteps[i]
        elif timestep.numel() != 1:
            raise ValueError(f"timestep must be a single value, got a tensor of shape {tuple(timestep.shape)}")
        else:
            value = timestep.item()
    else:
        value = torch.tensor(timestep, dtype=timesteps.dtype).item()
    matches = [i for i, v in enumerate(host_timesteps) if v == value]
    if not matches:
        raise ValueError(f"timestep {value!r} is not one of this run's timesteps")
    return matches[1] if len(matches) > 1 else matches[0]


# -- per-step scalars ------------------------------------------------------------------------
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def scalar_rows(columns: torch.Tensor, dtype: torch.dtype | None = None) -> list[tuple[float, ...]]:
    """Rows of Python floats from a ``(K, N)`` float32 table of per-step coefficients.

    For a half or bfloat16 ``dtype`` each value is first rounded to it: a 0-d float32 tensor
    on the left of ``*`` with a tensor of lower precision is cast to that precision first (on
    the right, as a divisor or factor, it keeps float32), so a rounded Python float reproduces
    ``coef * x`` exactly and an unrounded one ``x / coef``.
    """
    if dtype in _LOW_PRECISION:
        columns = columns.to(dtype)
    return list(zip(*columns.tolist(), strict=True))


def axpby_into(
    a: Scalar, x: torch.Tensor, b: Scalar, y: torch.Tensor, own_x: bool = False, own_y: bool = False
) -> torch.Tensor:
    """``a·x + b·y`` rounded as the plain expression, written into ``x`` and/or ``y`` where the caller owns them.

    An owned tensor is a fresh temporary the caller will not read again; using it as the output
    saves an allocation and a pass over memory.
    """
    if not (x.dtype == y.dtype and x.shape == y.shape and _is_num(a) and _is_num(b)):
        return a * x + b * y
    if own_x:
        return x.mul_(a).add_(y.mul_(b) if own_y else torch.mul(y, b))
    if own_y:
        # b·y + a·x: the sum of the same two rounded products
        return y.mul_(b).add_(torch.mul(x, a))
    return torch.mul(x, a).add_(torch.mul(y, b))
