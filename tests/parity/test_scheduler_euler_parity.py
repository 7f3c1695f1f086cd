"""The k-diffusion schedulers give diffusers' numbers: Euler, Euler ancestral, EDM Euler, Heun, LMS, KDPM2(A).

Plans (timesteps with their dtype, sigmas, ``init_noise_sigma``) must be equal to the bit. Sampling
runs are driven by a fixed fake model from the same noise, with the same generators, in three
copies: ours in float32, diffusers in float32, and diffusers with its sigmas and samples in
float64 (the exact value of diffusers' own maths; Euler-type steps upcast to float32 inside, so
there it is a float32 run). At every step, for the model input, ``prev_sample`` and
``pred_original_sample``::

    |ours - diffusers64| <= 1e-5 * scale + 2 * |diffusers32 - diffusers64|

where ``scale`` is the largest magnitude the run has held (sampling starts from σ_max·z and
shrinks, so absolute float32 rounding is set by that scale). The second term lets diffusers'
own float32 error count (both are maxima over the tensor): its Heun/DPM-2 steps compute
``(x - x0)/σ`` at small σ and lose up to ~5e-5 of the scale, where ours computes the same slope
from the model output without cancellation; and where a first stage cancels ``x`` against
``dt·d`` (σ_max ~ 10⁴ with ``squaredcos_cap_v2``) the next stage multiplies that rounding by
``|dt|·σ/(σ²+1)``, in either implementation. Where diffusers' float32 run gives NaN (see
test_ancestral_euler_stays_finite) ours must match the float64 run alone.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit.errors import ConfigError  # noqa: E402
from diffkit_scheduler_euler.edm_euler import EDMEulerScheduler  # noqa: E402
from diffkit_scheduler_euler.euler import EulerDiscreteScheduler  # noqa: E402
from diffkit_scheduler_euler.euler_ancestral import EulerAncestralDiscreteScheduler  # noqa: E402
from diffkit_scheduler_heun.heun import HeunDiscreteScheduler  # noqa: E402
from diffkit_scheduler_kdpm2.kdpm2 import KDPM2DiscreteScheduler  # noqa: E402
from diffkit_scheduler_kdpm2.kdpm2_ancestral import KDPM2AncestralDiscreteScheduler  # noqa: E402
from diffkit_scheduler_lms.lms import LMSDiscreteScheduler  # noqa: E402
from parity_tolerance import TOLERANCES, assert_matches  # noqa: E402

torch.set_num_threads(1)
# diffusers' DPM-2 hands torch tensors to numpy functions, which numpy 2 flags on every call
pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPE = (2, 3, 5, 5)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@dataclass(frozen=True)
class Kind:
    ours: type
    ref: type
    stochastic: bool = False
    float_attrs: tuple[str, ...] = ("sigmas",)
    step_args: tuple[str, ...] = field(default=())


KINDS = {
    "euler": Kind(EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler, True),
    "euler_a": Kind(EulerAncestralDiscreteScheduler, diffusers.EulerAncestralDiscreteScheduler, True),
    "edm": Kind(EDMEulerScheduler, diffusers.EDMEulerScheduler, True),
    "heun": Kind(HeunDiscreteScheduler, diffusers.HeunDiscreteScheduler),
    "lms": Kind(LMSDiscreteScheduler, diffusers.LMSDiscreteScheduler),
    "kdpm2": Kind(KDPM2DiscreteScheduler, diffusers.KDPM2DiscreteScheduler, False, ("sigmas", "sigmas_interpol")),
    "kdpm2_a": Kind(
        KDPM2AncestralDiscreteScheduler,
        diffusers.KDPM2AncestralDiscreteScheduler,
        True,
        ("sigmas", "sigmas_interpol", "sigmas_up", "sigmas_down"),
    ),
}
NOISY_MODULES = ("euler_discrete", "euler_ancestral_discrete", "edm_euler", "k_dpm_2_ancestral_discrete")


@pytest.fixture(autouse=True, scope="module")
def quiet_and_float32_noise():
    """diffusers' float64 copy draws its noise in float32 (as the float32 runs do), then upcasts it."""
    logging.disable(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        for name in NOISY_MODULES:
            module = importlib.import_module(f"diffusers.schedulers.scheduling_{name}")
            draw = module.randn_tensor

            def float32_draw(shape, generator=None, device=None, dtype=None, layout=None, _draw=draw):
                wanted = torch.float32 if dtype == torch.float64 else dtype
                return _draw(shape, generator=generator, device=device, dtype=wanted, layout=layout).to(dtype)

            mp.setattr(module, "randn_tensor", float32_draw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    logging.disable(logging.NOTSET)


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a denoiser: a function of (x, t) only."""
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return 0.1 * x + torch.sin(torch.as_tensor(t, dtype=x.dtype) / 37.0 + phase)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype and shape, values within the dtype's parity tolerance, NaN where the other has NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    rtol, atol = TOLERANCES[a.dtype]
    return bool(torch.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True).all())


def close(ours: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, scale: float, what: str) -> float:
    """The criterion of the module docstring; returns ``max|ours - ref|/scale``."""
    assert ours.dtype == ref.dtype and ours.shape == ref.shape, what
    scale = max(scale, float(exact.abs().max()))
    own = float((ref.double() - exact).abs().nan_to_num(0.0).max())  # where diffusers gives NaN, ours must be exact
    err = float((ours.double() - exact).abs().max())
    assert err <= 1e-5 * scale + 2 * own, (
        f"{what}: error {err / scale:.3g} of the scale {scale:.3g}, diffusers' {own / scale:.3g}"
    )
    return float((ours - ref).abs().max()) / scale


def planned(kind: str, cfg: dict, plan_args: tuple, plan_kw: dict, api: str = "plan"):
    """Our run (the state or the scheduler itself), diffusers' and diffusers' float64 copy, planned alike."""
    spec = KINDS[kind]
    ours, ref, exact = spec.ours(**cfg), spec.ref(**cfg), spec.ref(**cfg)
    if api == "legacy":
        ours.set_timesteps(*plan_args, **plan_kw)
        run = ours
    else:
        run = ours.plan(*plan_args, **plan_kw)
    ref.set_timesteps(*plan_args, **plan_kw)
    exact.set_timesteps(*plan_args, **plan_kw)
    for name in spec.float_attrs:
        setattr(exact, name, getattr(exact, name).double())
    return run, ref, exact


def check_plan(run, ref, float_attrs=("sigmas",)) -> None:
    assert same(run.timesteps, ref.timesteps), (run.timesteps, ref.timesteps)
    for name in float_attrs[:2]:
        assert same(getattr(run, name), getattr(ref, name)), name
    assert math.isclose(float(run.init_noise_sigma), float(ref.init_noise_sigma), rel_tol=2e-6)


def sample_and_compare(kind: str, run, ref, exact, step_kwargs=lambda i: {}, seed: int = 0) -> float:
    """Run all three copies to the end; check every step; return the largest ``|ours - diffusers32|/scale``."""
    if int((ref.timesteps == ref.timesteps[0]).sum()) > 1:
        # diffusers would start at the second copy of a repeated first timestep (see test_repeated_first_timestep)
        for r in (run, ref, exact):
            r.set_begin_index(0)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * run.init_noise_sigma
    y, z = x.clone(), x.double()
    scale, worst = 1.0, 0.0
    stochastic = KINDS[kind].stochastic
    for i, (t, rt) in enumerate(zip(run.timesteps, ref.timesteps, strict=True)):
        scale = max(scale, float(z.abs().max()))
        xin, yin, zin = run.scale_model_input(x, t), ref.scale_model_input(y, rt), exact.scale_model_input(z, rt)
        worst = max(worst, close(xin, yin, zin, scale, f"model input at step {i}"))
        outs = []
        for sched, s, inp, tt in ((run, x, xin, t), (ref, y, yin, rt), (exact, z, zin, rt)):
            kw = dict(step_kwargs(i))
            if stochastic:
                kw["generator"] = torch.Generator().manual_seed(seed + 1000 + i)
            outs.append(sched.step(fake_model(inp, tt), tt, s, **kw))
        a, b, c = outs
        worst = max(worst, close(a.prev_sample, b.prev_sample, c.prev_sample, scale, f"prev_sample at step {i}"))
        worst = max(
            worst,
            close(a.pred_original_sample, b.pred_original_sample, c.pred_original_sample, scale, f"x0 at step {i}"),
        )
        x, y, z = a.prev_sample, b.prev_sample, c.prev_sample
    return worst


# -- strategies --------------------------------------------------------------------------------
@st.composite
def training(draw, schedules=("linear", "scaled_linear", "squaredcos_cap_v2"), sizes=(1000, 1000, 500, 97)) -> dict:
    t = draw(st.sampled_from(sizes))
    cfg: dict = {"num_train_timesteps": t}
    kind = draw(st.sampled_from([*schedules, "trained"]))
    start, end = draw(st.sampled_from([(0.0001, 0.02), (0.00085, 0.012), (0.0015, 0.0195)]))
    if kind == "trained":
        cfg["trained_betas"] = np.linspace(start, end, t).tolist()
    else:
        cfg.update(beta_schedule=kind, beta_start=start, beta_end=end)
    return cfg


@st.composite
def spacing(draw, cfg: dict, max_steps: int = 100) -> int:
    """Adds ``timestep_spacing``/``steps_offset`` to ``cfg``; returns a step count valid for them."""
    t = cfg["num_train_timesteps"]
    cfg["timestep_spacing"] = draw(st.sampled_from(["linspace", "leading", "trailing"]))
    n = draw(st.integers(1, max_steps if cfg["timestep_spacing"] == "linspace" else min(max_steps, t)))
    if cfg["timestep_spacing"] == "leading":
        cfg["steps_offset"] = draw(st.sampled_from([0, 1]))
    return n


def sigma_flags(draw, cfg: dict, kinds=("karras", "exponential", "beta")) -> None:
    chosen = draw(st.sampled_from([None, None, *kinds]))
    if chosen:
        cfg[f"use_{chosen}_sigmas"] = True


def diffusers_has_n(ref, n: int, order: int = 1, check_length: bool = True) -> bool:
    """Whether diffusers planned ``n`` steps as asked.

    Its ``trailing`` spacing sometimes appends a spurious timestep ``-1`` (see
    test_trailing_gives_n_steps); with a Karras/exponential/beta schedule the extra timestep is
    gone again but it has lowered σ_min to σ(0). Ours always spaces ``n`` timesteps.
    """
    cfg = ref.config
    if cfg.get("timestep_spacing") == "trailing":
        t = cfg.num_train_timesteps
        if len(np.arange(t, 0, -t / n)) != n:
            return False
    return not check_length or len(ref.timesteps) == (1 if n == 1 else order * n - (order - 1))


# -- sampling runs -----------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 999))
def test_euler_runs(data, api, seed):
    cfg = data.draw(training())
    n = data.draw(spacing(cfg))
    cfg["prediction_type"] = data.draw(st.sampled_from(["epsilon", "v_prediction", "sample"]))
    cfg["interpolation_type"] = data.draw(st.sampled_from(["linear", "linear", "log_linear"]))
    sigma_flags(data.draw, cfg)
    if data.draw(st.booleans()) and any(cfg.get(f"use_{k}_sigmas") for k in ("karras", "exponential", "beta")):
        cfg["sigma_min"], cfg["sigma_max"] = data.draw(st.sampled_from([(0.05, 10.0), (0.002, 80.0), (0.5, 5.0)]))
    cfg["timestep_type"] = data.draw(st.sampled_from(["discrete", "continuous"]))
    cfg["rescale_betas_zero_snr"] = data.draw(st.booleans())
    cfg["final_sigmas_type"] = data.draw(st.sampled_from(["zero", "sigma_min"]))
    churn = data.draw(st.sampled_from([None, (0.5, 0.0, float("inf"), 1.0), (4.0, 0.1, 5.0, 1.003)]))
    run, ref, exact = planned("euler", cfg, (n,), {}, api)
    # log_linear plans n+1 sigmas (n+2 with the final one) whatever the timesteps, as in diffusers
    assume(diffusers_has_n(ref, n, check_length=cfg["interpolation_type"] != "log_linear"))
    check_plan(run, ref)
    args = dict(zip(("s_churn", "s_tmin", "s_tmax", "s_noise"), churn, strict=True)) if churn else {}
    sample_and_compare("euler", run, ref, exact, lambda i: args if i % 2 else {}, seed)


@SETTINGS
@given(data=st.data(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 999))
def test_euler_ancestral_runs(data, api, seed):
    cfg = data.draw(training())
    n = data.draw(spacing(cfg))
    cfg["prediction_type"] = data.draw(st.sampled_from(["epsilon", "v_prediction"]))
    cfg["rescale_betas_zero_snr"] = data.draw(st.booleans())
    run, ref, exact = planned("euler_a", cfg, (n,), {}, api)
    assume(diffusers_has_n(ref, n))
    check_plan(run, ref)
    sample_and_compare("euler_a", run, ref, exact, seed=seed)


@SETTINGS
@given(data=st.data(), n=st.integers(1, 100), seed=st.integers(0, 999))
def test_edm_euler_runs(data, n, seed):
    cfg = {
        "sigma_schedule": data.draw(st.sampled_from(["karras", "exponential"])),
        "prediction_type": data.draw(st.sampled_from(["epsilon", "v_prediction"])),
        "final_sigmas_type": data.draw(st.sampled_from(["zero", "sigma_min"])),
        "rho": data.draw(st.sampled_from([7.0, 5.0, 3.0])),
        "sigma_data": data.draw(st.sampled_from([0.5, 1.0])),
    }
    cfg["sigma_min"], cfg["sigma_max"] = data.draw(st.sampled_from([(0.002, 80.0), (0.03, 14.6), (0.01, 700.0)]))
    churn = data.draw(st.sampled_from([None, (1.0, 0.0, float("inf"), 1.0), (40.0, 0.05, 50.0, 1.003)]))
    if data.draw(st.booleans()):
        ramp = sorted(data.draw(st.lists(st.floats(0, 1), min_size=1, max_size=40)))
        plan_args, plan_kw = (), {"sigmas": torch.tensor(ramp, dtype=torch.float64)}
    else:
        plan_args, plan_kw = (n,), {}
    run, ref, exact = planned("edm", cfg, plan_args, plan_kw)
    check_plan(run, ref)
    args = dict(zip(("s_churn", "s_tmin", "s_tmax", "s_noise"), churn, strict=True)) if churn else {}
    sample_and_compare("edm", run, ref, exact, lambda i: args if i % 2 else {}, seed)


@SETTINGS
@given(data=st.data(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 999))
def test_heun_runs(data, api, seed):
    cfg = data.draw(training(("linear", "scaled_linear", "squaredcos_cap_v2", "exp")))
    n = data.draw(spacing(cfg, 60))
    cfg["prediction_type"] = data.draw(st.sampled_from(["epsilon", "v_prediction", "sample"]))
    cfg["clip_sample"] = data.draw(st.booleans())
    cfg["clip_sample_range"] = data.draw(st.sampled_from([1.0, 3.0]))
    sigma_flags(data.draw, cfg)
    plan_args, plan_kw = (n,), {}
    if not any(cfg.get(f"use_{k}_sigmas") for k in ("karras", "exponential", "beta")) and data.draw(st.booleans()):
        t = cfg["num_train_timesteps"]
        chosen = data.draw(st.sets(st.integers(0, t - 1), min_size=1, max_size=30))
        plan_args, plan_kw = (), {"timesteps": sorted(chosen, reverse=True)}
    run, ref, exact = planned("heun", cfg, plan_args, plan_kw, api)
    assume("timesteps" in plan_kw or diffusers_has_n(ref, n, order=2))
    check_plan(run, ref)
    sample_and_compare("heun", run, ref, exact, seed=seed)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), order=st.integers(1, 4), seed=st.integers(0, 999))
def test_lms_runs(data, order, seed):
    cfg = data.draw(training())
    n = data.draw(spacing(cfg, 25))  # diffusers integrates with scipy quad in every step: slow
    cfg["prediction_type"] = data.draw(st.sampled_from(["epsilon", "v_prediction", "sample"]))
    sigma_flags(data.draw, cfg)
    run, ref, exact = planned("lms", cfg, (n,), {})
    assume(diffusers_has_n(ref, n))
    check_plan(run, ref)
    sample_and_compare("lms", run, ref, exact, lambda i: {"order": order}, seed)


@SETTINGS
@given(data=st.data(), ancestral=st.booleans(), seed=st.integers(0, 999))
def test_kdpm2_runs(data, ancestral, seed):
    kind = "kdpm2_a" if ancestral else "kdpm2"
    cfg = data.draw(training(sizes=(500, 200, 97)))  # diffusers' DPM-2 takes ~2 s to build with T=1000
    n = data.draw(spacing(cfg, 60))
    cfg["prediction_type"] = data.draw(st.sampled_from(["epsilon", "v_prediction"]))
    sigma_flags(data.draw, cfg)
    run, ref, exact = planned(kind, cfg, (n,), {})
    assume(diffusers_has_n(ref, n, order=2))
    assume(not ref.timesteps.isnan().any())  # see test_kdpm2_ancestral_never_plans_nan_timesteps
    check_plan(run, ref, KINDS[kind].float_attrs)
    sample_and_compare(kind, run, ref, exact, seed=seed)


@pytest.mark.parametrize(
    "kind, cfg, n",
    [
        ("euler", {**SD, "use_karras_sigmas": True}, 25),
        ("euler", {"prediction_type": "v_prediction", "timestep_type": "continuous", "sigma_min": 0.002}, 20),
        ("euler_a", {**SD, "timestep_spacing": "leading", "steps_offset": 1}, 30),
        ("heun", {**SD, "use_karras_sigmas": True}, 20),
        ("heun", {**SD, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 30),
        ("lms", {**SD, "use_exponential_sigmas": True}, 20),
        ("kdpm2", {**SD, "use_karras_sigmas": True}, 20),
        ("kdpm2_a", {**SD, "use_beta_sigmas": True, "prediction_type": "v_prediction"}, 20),
    ],
)
def test_typical_configs(kind, cfg, n):
    run, ref, exact = planned(kind, cfg, (n,), {})
    check_plan(run, ref, KINDS[kind].float_attrs)
    sample_and_compare(kind, run, ref, exact)


# -- plans ---------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(list(KINDS)), data=st.data())
def test_plans(kind, data):
    if kind == "edm":
        cfg = {"sigma_schedule": data.draw(st.sampled_from(["karras", "exponential"])), "num_train_timesteps": 50}
        n = data.draw(st.integers(1, 200))
    else:
        cfg = data.draw(training())
        cfg["num_train_timesteps"] = min(cfg["num_train_timesteps"], 500)
        cfg.pop("trained_betas", None)
        n = data.draw(spacing(cfg, 200))
        if kind not in ("euler_a",):
            sigma_flags(data.draw, cfg)
    run, ref, _ = planned(kind, cfg, (n,), {})
    assume(kind == "edm" or diffusers_has_n(ref, n, order=KINDS[kind].ours.order))
    assume(not ref.timesteps.isnan().any())  # see test_kdpm2_ancestral_never_plans_nan_timesteps
    check_plan(run, ref, KINDS[kind].float_attrs)


@pytest.mark.parametrize("kind", list(KINDS))
def test_default_runs_before_set_timesteps(kind):
    """The run diffusers sets up in ``__init__``: all training timesteps, before any ``set_timesteps``."""
    cfg = {"num_train_timesteps": 40} if kind == "edm" else {**SD, "num_train_timesteps": 60}
    ours, ref = KINDS[kind].ours(**cfg), KINDS[kind].ref(**cfg)
    check_plan(ours, ref, KINDS[kind].float_attrs)


def test_custom_sigmas_and_timesteps():
    cases = [
        ("euler", SD, {"sigmas": [14.6, 7.0, 3.0, 1.0, 0.3, 0.0]}),
        ("euler", {**SD, "final_sigmas_type": "sigma_min"}, {"timesteps": [999, 750, 500, 250, 10]}),
        ("euler", {**SD, "interpolation_type": "log_linear"}, {"timesteps": [980, 700, 300]}),
        ("heun", SD, {"timesteps": [999, 800, 600, 300, 100, 1]}),
    ]
    for kind, cfg, plan_kw in cases:
        run, ref, exact = planned(kind, cfg, (), plan_kw)
        check_plan(run, ref)
        sample_and_compare(kind, run, ref, exact)


@pytest.mark.parametrize(
    "kind, cfg",
    [
        ("euler", {"use_karras_sigmas": True}),
        ("heun", {"use_exponential_sigmas": True}),
        ("euler", {"use_beta_sigmas": True}),
    ],
)
def test_custom_timesteps_with_a_sigma_schedule_are_refused(kind, cfg):
    with pytest.raises(ValueError, match="use_.*_sigmas"):
        KINDS[kind].ours(**cfg).plan(timesteps=[900, 500, 100])
    with pytest.raises(ValueError):
        KINDS[kind].ref(**cfg).set_timesteps(timesteps=[900, 500, 100])


# -- img2img, add_noise --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["euler", "euler_a", "edm", "heun", "kdpm2", "kdpm2_a"])
def test_begin_index_and_add_noise(kind):
    """img2img: noise the image to the begin step's σ with ``add_noise``, then sample from there."""
    cfg = {} if kind == "edm" else dict(SD)
    run, ref, exact = planned(kind, cfg, (12,), {})
    begin = 4 * KINDS[kind].ours.order
    image = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    t = ref.timesteps[begin : begin + 1]
    for r in (run, ref, exact):
        r.set_begin_index(begin)
    a, b = run.add_noise(image, noise, t), ref.add_noise(image, noise, t)
    assert_matches(a, b)
    x, y, z = a, b.clone(), b.double()
    for i, (ti, rti) in enumerate(zip(run.timesteps[begin:], ref.timesteps[begin:], strict=True)):

        def kw(i=i):
            return {"generator": torch.Generator().manual_seed(i)} if KINDS[kind].stochastic else {}

        o = run.step(fake_model(run.scale_model_input(x, ti), ti), ti, x, **kw()).prev_sample
        p = ref.step(fake_model(ref.scale_model_input(y, rti), rti), rti, y, **kw()).prev_sample
        q = exact.step(fake_model(exact.scale_model_input(z, rti), rti), rti, z, **kw()).prev_sample
        close(o, p, q, float(b.abs().max()), f"img2img step {i}")
        x, y, z = o, p, q


def test_add_noise_looks_up_timesteps():
    run, ref, _ = planned("euler", SD, (20,), {})
    image = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    t = ref.timesteps[[3, 11]]
    assert_matches(run.add_noise(image, noise, t), ref.add_noise(image, noise, t))


# -- where diffusers is wrong -------------------------------------------------------------------
def test_repeated_first_timestep():
    """Karras sigmas above the training range repeat the first timestep (diffusers #12771 for Euler).

    diffusers starts such a run at the second copy, skips σ_max and runs past the end of its
    sigmas; a run here starts where it is told.
    """
    cfg = {**SD, "use_karras_sigmas": True, "sigma_max": 30.0}
    run, ref, exact = planned("euler", cfg, (10,), {})
    assert float(ref.timesteps[0]) == float(ref.timesteps[1])
    x = torch.randn(SHAPE)
    with pytest.raises(IndexError):
        for t in ref.timesteps:
            x = ref.step(fake_model(ref.scale_model_input(x, t), t), t, x).prev_sample
    steps = 0
    y = torch.randn(SHAPE)
    for t in run.timesteps:
        y = run.step(fake_model(run.scale_model_input(y, t), t), t, y).prev_sample
        steps += 1
    assert steps == 10 and run.step_index == 10 and torch.isfinite(y).all()
    ref.set_timesteps(10)
    sample_and_compare("euler", run.scheduler.plan(10), ref, exact)  # begin_index 0 makes diffusers agree


def test_kdpm2_ancestral_never_plans_nan_timesteps():
    """With σ_next ≪ σ diffusers' σ_down cancels to 0 and the log-midpoint timestep is NaN."""
    cfg = {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}
    ours, ref = KDPM2AncestralDiscreteScheduler(**cfg), diffusers.KDPM2AncestralDiscreteScheduler(**cfg)
    run = ours.plan(2)
    ref.set_timesteps(2)
    assert ref.timesteps.isnan().any() and not run.timesteps.isnan().any()
    assert torch.isfinite(run.sigmas_interpol).all()
    # σ_mid = √(σ·σ_down) with σ_down = σ_next²/σ: σ_mid = σ_next
    assert math.isclose(float(run.sigmas_interpol[0]), float(run.sigmas[1]), rel_tol=1e-3)


def test_ancestral_euler_stays_finite():
    """σ_max ≈ 2·10⁴ (``squaredcos_cap_v2``): diffusers' σ_down = √(σ_to² - σ_up²) turns NaN in float32."""
    cfg = {"beta_schedule": "squaredcos_cap_v2"}
    run, ref, exact = planned("euler_a", cfg, (4,), {})
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * run.init_noise_sigma
    t = run.timesteps[0]
    out = fake_model(run.scale_model_input(x, t), t)
    a = run.step(out, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    b = ref.step(out, ref.timesteps[0], x, generator=torch.Generator().manual_seed(1)).prev_sample
    c = exact.step(out.double(), ref.timesteps[0], x.double(), generator=torch.Generator().manual_seed(1)).prev_sample
    assert b.isnan().all() and torch.isfinite(a).all()
    assert float((a.double() - c).abs().max()) <= 1e-5 * float(x.abs().max())


def test_trailing_gives_n_steps():
    for kind in ("euler", "heun"):
        ours, ref = KINDS[kind].ours(timestep_spacing="trailing"), KINDS[kind].ref(timestep_spacing="trailing")
        ref.set_timesteps(61)
        run = ours.plan(61)
        n = 61 * ours.order - (ours.order - 1)
        assert len(ref.timesteps) > n and len(run.timesteps) == n
        assert_matches(run.timesteps, ref.timesteps[:n])


def test_lms_started_mid_schedule_uses_the_derivatives_it_has():
    """From ``set_begin_index(k)`` diffusers weighs its single derivative with a 4th-order weight."""
    ours = LMSDiscreteScheduler(**SD)
    run = ours.plan(10)
    run.set_begin_index(5)
    x = torch.randn(SHAPE)
    t = run.timesteps[5]
    eps = fake_model(run.scale_model_input(x, t), t)
    out = run.step(eps, t, x).prev_sample
    s, s_next = run.sigmas[5].item(), run.sigmas[6].item()
    assert torch.allclose(out, x + (s_next - s) * eps, atol=1e-5)  # first order: an Euler step


def test_euler_velocity_uses_the_timesteps_noise_level():
    """diffusers indexes ``alphas_cumprod`` with the step's position; this uses ᾱ = 1/(σ²+1) at the timestep."""
    ours = EulerDiscreteScheduler(**SD)
    ours.set_timesteps(10)
    x0, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    t = ours.timesteps[2:3]
    sigma = float(ours.sigmas[2])
    ab = 1 / (sigma**2 + 1)
    expected = ab**0.5 * eps - (1 - ab) ** 0.5 * x0
    assert torch.allclose(ours.get_velocity(x0, eps, t), expected, atol=1e-6)


def test_sample_prediction_in_ancestral_samplers():
    """diffusers raises NotImplementedError; with x0 given, the step is the ε step with ε = (x - x0)/σ."""
    for cls in (EulerAncestralDiscreteScheduler, KDPM2DiscreteScheduler):
        run_x0, run_eps = cls(**SD, prediction_type="sample").plan(6), cls(**SD).plan(6)
        x = torch.randn(SHAPE)
        for t in run_x0.timesteps:
            i = run_x0._start(t)
            second_stage = cls is KDPM2DiscreteScheduler and not run_x0.state_in_first_order
            sigma = (run_x0.sigmas_interpol if second_stage else run_x0.sigmas)[i].item()
            x0 = torch.tanh(x)
            g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            a = run_x0.step(x0, t, x, generator=g1).prev_sample
            b = run_eps.step((x - x0) / sigma, t, x, generator=g2).prev_sample
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)
            x = a


# -- dtypes, API ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_half_precision(kind):
    cfg = {} if kind == "edm" else dict(SD)
    spec = KINDS[kind]
    ours, ref = spec.ours(**cfg), spec.ref(**cfg)
    run = ours.plan(8)
    ref.set_timesteps(8)
    x = (torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * run.init_noise_sigma).half()
    y = x.clone()
    for i, (t, rt) in enumerate(zip(run.timesteps, ref.timesteps, strict=True)):
        kw = {"generator": torch.Generator().manual_seed(i)} if spec.stochastic else {}
        kw2 = {"generator": torch.Generator().manual_seed(i)} if spec.stochastic else {}
        a = run.step(fake_model(run.scale_model_input(x, t), t), t, x, **kw).prev_sample
        b = ref.step(fake_model(ref.scale_model_input(y, rt), rt), rt, y, **kw2).prev_sample
        assert a.dtype == b.dtype == torch.float16
        scale = max(1.0, float(y.abs().max()))
        assert float((a.float() - b.float()).abs().max()) <= 1e-2 * scale, i
        x, y = a, b


@pytest.mark.parametrize("kind", ["euler", "euler_a", "edm"])
def test_integer_timesteps_are_refused(kind):
    run = KINDS[kind].ours().plan(5)
    with pytest.raises(ValueError, match="integer timestep"):
        run.step(torch.zeros(SHAPE), 3, torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="integer timestep"):
        run.step(torch.zeros(SHAPE), torch.tensor(3), torch.zeros(SHAPE))


def test_positional_arguments_follow_diffusers():
    heun = HeunDiscreteScheduler(**SD)
    heun.set_timesteps(5, None, 500)
    ref = diffusers.HeunDiscreteScheduler(**SD)
    ref.set_timesteps(5, None, 500)
    assert_matches(heun.timesteps, ref.timesteps)
    x = torch.randn(SHAPE)
    t = heun.timesteps[0]
    a = heun.step(fake_model(x, t), t, x, False)
    b = ref.step(fake_model(x, t), t, x, False)
    assert isinstance(a, tuple) and torch.allclose(a[0], b[0], atol=1e-5)
    euler, ref = EulerDiscreteScheduler(), diffusers.EulerDiscreteScheduler()
    euler.set_timesteps(5)
    ref.set_timesteps(5)
    t = euler.timesteps[0]
    args = (0.5, 0.0, float("inf"), 1.0, torch.Generator().manual_seed(0), False)
    a = euler.step(fake_model(x, t), t, x, *args)
    b = ref.step(fake_model(x, t), t, x, *args[:4], torch.Generator().manual_seed(0), False)
    assert torch.allclose(a[0], b[0], atol=1e-4)


# -- configs -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(KINDS))
def test_fields_defaults_and_compatibles_match(kind):
    spec = KINDS[kind]
    ours, ref = spec.ours(), spec.ref()
    fields = ours.config.model_dump()
    theirs = {k: v for k, v in ref.config.items() if not k.startswith("_")}
    assert fields == theirs
    assert sorted(spec.ours.compatibles_names) == sorted(spec.ref._compatibles)


@pytest.mark.parametrize("kind", list(KINDS))
def test_config_files_interoperate(kind, tmp_path):
    cfg = (
        {"sigma_max": 20.0, "rho": 5.0}
        if kind == "edm"
        else {**SD, "steps_offset": 1, "prediction_type": "v_prediction"}
    )
    spec = KINDS[kind]
    spec.ours(**cfg).save_pretrained(tmp_path / "ours")
    spec.ref(**cfg).save_pretrained(tmp_path / "ref")
    ours_json = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    ref_json = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    drop = ("_diffusers_version",)
    assert {k: v for k, v in ours_json.items() if k not in drop} == {k: v for k, v in ref_json.items() if k not in drop}
    assert spec.ours.from_pretrained(tmp_path / "ref").config.model_dump() == spec.ours(**cfg).config.model_dump()


@pytest.mark.parametrize(
    "source, target",
    [
        ("ddim", "euler"),
        ("euler", "heun"),
        ("heun", "lms"),
        ("lms", "kdpm2"),
        ("kdpm2_a", "euler_a"),
        ("euler_a", "euler"),
    ],
)
def test_from_config_swaps(source, target):
    cfg = {**SD, "prediction_type": "v_prediction", "timestep_spacing": "leading", "steps_offset": 1}
    if source == "ddim":
        from diffkit_scheduler_ddim.ddim import DDIMScheduler

        ours_src, ref_src = DDIMScheduler(**cfg, clip_sample=False), diffusers.DDIMScheduler(**cfg, clip_sample=False)
    else:
        ours_src, ref_src = KINDS[source].ours(**cfg), KINDS[source].ref(**cfg)
    ours = KINDS[target].ours.from_config(ours_src.config)
    ref = KINDS[target].ref.from_config(ref_src.config)
    fields = ours.config.model_dump()
    assert fields == {k: ref.config[k] for k in fields}
    run = ours.plan(10)
    ref.set_timesteps(10)
    check_plan(run, ref)


def test_sigma_bounds_carried_over_from_a_swapped_config():
    """diffusers reads ``sigma_min``/``sigma_max`` wherever the config has them, also as keys kept from Euler."""
    src = {**SD, "use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 10.0}
    ours = HeunDiscreteScheduler.from_config(EulerDiscreteScheduler(**src).config)
    ref = diffusers.HeunDiscreteScheduler.from_config(diffusers.EulerDiscreteScheduler(**src).config)
    run = ours.plan(8)
    ref.set_timesteps(8)
    check_plan(run, ref)
    assert math.isclose(float(run.sigmas[0]), 10.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    "kind, cfg, names",
    [
        ("euler", {"use_karras_sigmas": True, "use_beta_sigmas": True}, "use_karras_sigmas.*use_beta_sigmas"),
        ("heun", {"use_exponential_sigmas": True, "use_karras_sigmas": True}, "use_karras_sigmas.*use_exponential"),
        ("euler", {"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min.*sigma_max"),
        ("edm", {"sigma_min": 90.0}, "sigma_min.*sigma_max"),
        ("lms", {"trained_betas": [0.1, 0.2], "num_train_timesteps": 3}, "trained_betas"),
        ("kdpm2", {"beta_schedule": "sigmoid"}, "beta_schedule"),
        ("euler", {"steps_offset": 1000}, "steps_offset"),
        ("edm", {"sigma_schedule": "linear"}, "sigma_schedule"),
    ],
)
def test_invalid_configs_are_refused_at_construction(kind, cfg, names):
    with pytest.raises(ConfigError, match=names):
        KINDS[kind].ours(**cfg)
