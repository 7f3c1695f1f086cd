"""The DPM-Solver family, DEIS and UniPC give diffusers' numbers: timesteps, sigmas, whole trajectories."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("torchsde")

from diffkit.errors import ConfigError  # noqa: E402
from diffkit_scheduler_deis.deis import DEISMultistepScheduler  # noqa: E402
from diffkit_scheduler_dpmsolver.edm import EDMDPMSolverMultistepScheduler  # noqa: E402
from diffkit_scheduler_dpmsolver.multistep import DPMSolverMultistepScheduler  # noqa: E402
from diffkit_scheduler_dpmsolver.multistep_inverse import DPMSolverMultistepInverseScheduler  # noqa: E402
from diffkit_scheduler_dpmsolver.sde import DPMSolverSDEScheduler  # noqa: E402
from diffkit_scheduler_dpmsolver.singlestep import DPMSolverSinglestepScheduler  # noqa: E402
from diffkit_scheduler_unipc.unipc import UniPCMultistepScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*Should have.*")

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPE = (2, 3, 6, 6)
PAIRS = {
    "multistep": (DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler),
    "singlestep": (DPMSolverSinglestepScheduler, diffusers.DPMSolverSinglestepScheduler),
    "inverse": (DPMSolverMultistepInverseScheduler, diffusers.DPMSolverMultistepInverseScheduler),
    "edm": (EDMDPMSolverMultistepScheduler, diffusers.EDMDPMSolverMultistepScheduler),
    "sde": (DPMSolverSDEScheduler, diffusers.DPMSolverSDEScheduler),
    "deis": (DEISMultistepScheduler, diffusers.DEISMultistepScheduler),
    "unipc": (UniPCMultistepScheduler, diffusers.UniPCMultistepScheduler),
}


def build(kind: str, cfg: dict):
    ours, theirs = PAIRS[kind]
    return ours(**cfg), theirs(**cfg)


class Denoiser:
    """A deterministic stand-in for a trained model: a function of (x, t) whose clean estimate stays bounded.

    The clean estimate is ``D = 0.6·tanh(x) + 0.3·sin(t/37 + c)``; the output is what a model of the
    given prediction type would return for it at the VP (or flow) noise level of ``t``.
    """

    def __init__(self, alphas_cumprod: torch.Tensor | None, prediction_type: str, flow: bool = False, n_train=1000):
        self.ab, self.pt, self.flow, self.n = alphas_cumprod, prediction_type, flow, n_train

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        tv = float(t)
        phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
        xf = x.float()
        d = 0.6 * torch.tanh(xf) + 0.3 * torch.sin(tv / 37.0 + phase)
        if self.flow:
            sigma = min(max(tv / self.n, 1e-3), 1 - 1e-3)
            alpha = 1 - sigma
        else:
            ab = float(self.ab[min(max(int(tv), 0), len(self.ab) - 1)])
            alpha, sigma = math.sqrt(ab), math.sqrt(max(1 - ab, 1e-8))
        eps = (xf - alpha * d) / sigma
        out = {
            "epsilon": eps,
            "sample": d,
            "v_prediction": alpha * eps - sigma * d,
            "flow_prediction": eps - d,
        }[self.pt]
        return out.to(x.dtype)


def simple_model(x: torch.Tensor, t) -> torch.Tensor:
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return 0.1 * x + torch.sin(torch.as_tensor(float(t), dtype=x.dtype) / 37.0 + phase)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str, rtol: float = 1e-5) -> None:
    """Within ``rtol`` of the reference's scale (max |ref|, at least 1); NaN/±inf in the same places."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    finite = torch.isfinite(ref)
    assert torch.equal(finite, torch.isfinite(ours)), f"{what}: non-finite values differ"
    assert torch.equal(ours[~finite].nan_to_num(0), ref[~finite].nan_to_num(0)), f"{what}: inf signs differ"
    if finite.any():
        scale = max(ref[finite].abs().max().item(), 1.0)
        diff = (ours[finite].double() - ref[finite].double()).abs().max().item()
        assert diff <= rtol * scale, f"{what}: max diff {diff:.3g} at scale {scale:.3g}"


def same_schedule(state, ref) -> None:
    """Same timesteps, sigmas and initial noise scale; runs with repeated timesteps (#12771) are tested apart."""
    assert_matches(state.timesteps, ref.timesteps, "timesteps")
    assert_matches(state.sigmas, ref.sigmas, "sigmas")
    assert math.isclose(float(state.init_noise_sigma), float(ref.init_noise_sigma), rel_tol=2e-6)
    assume(len(set(ref.timesteps.tolist())) == len(ref.timesteps))


def run_both(state, ref, model, steps_kwargs=None, seed=0, shape=SHAPE, dtype=torch.float32, rtol=1e-5, per_sample=False):
    """Drive both runs with the same model and generators; compare after every step."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 7)).to(dtype)
    y = x.clone()

    def gens():
        if per_sample:
            return [torch.Generator().manual_seed(seed + i) for i in range(shape[0])]
        return torch.Generator().manual_seed(seed)

    g_ours, g_ref = gens(), gens()
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        xi, yi = state.scale_model_input(x, t), ref.scale_model_input(y, rt)
        assert_close(xi, yi, f"scaled input at step {i}", rtol)
        kw_ours, kw_ref = dict(steps_kwargs or {}), dict(steps_kwargs or {})
        if "generator" in (steps_kwargs or {}):
            kw_ours["generator"], kw_ref["generator"] = g_ours, g_ref
        a = state.step(model(xi, t), t, x, **kw_ours)
        b = ref.step(model(yi, rt), rt, y, **kw_ref)
        assert_close(a.prev_sample, b.prev_sample, f"x at step {i} (t={float(t)})", rtol)
        x, y = a.prev_sample, b.prev_sample
    return x, y


def start(kind, cfg, n, api, **plan_kwargs):
    ours, ref = build(kind, cfg)
    if api == "legacy":
        ours.set_timesteps(n, **plan_kwargs)
        state = ours
    else:
        state = ours.plan(n, **plan_kwargs)
    ref.set_timesteps(n, **plan_kwargs)
    return ours, state, ref


# -- strategies -------------------------------------------------------------------------------
@st.composite
def vp_base(draw, schedules=("linear", "scaled_linear", "squaredcos_cap_v2")) -> dict:
    t = draw(st.sampled_from([1000, 1000, 400]))
    cfg: dict = {"num_train_timesteps": t}
    kind = draw(st.sampled_from([*schedules, "trained"]))
    start_, end = draw(st.sampled_from([(0.0001, 0.02), (0.00085, 0.012)]))
    if kind == "trained":
        cfg["trained_betas"] = np.linspace(start_, end, t).tolist()
    else:
        cfg.update(beta_schedule=kind, beta_start=start_, beta_end=end)
    return cfg


@st.composite
def sigma_choice(draw, allow=("none", "karras", "exponential", "beta", "flow")) -> dict:
    kind = draw(st.sampled_from(allow))
    if kind == "none":
        return {}
    if kind == "flow":
        return {"use_flow_sigmas": True, "flow_shift": draw(st.sampled_from([1.0, 3.0]))}
    if kind == "lu":
        return {"use_lu_lambdas": True}
    return {f"use_{kind}_sigmas": True}


def prediction_for(draw, cfg: dict, algorithm_data: bool = True) -> str:
    if cfg.get("use_flow_sigmas") and algorithm_data:
        return draw(st.sampled_from(["flow_prediction", "flow_prediction", "epsilon", "v_prediction"]))
    return draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))


def model_for(ours, cfg: dict):
    pt = cfg.get("prediction_type", "epsilon")
    return Denoiser(ours.alphas_cumprod, pt, bool(cfg.get("use_flow_sigmas")), cfg.get("num_train_timesteps", 1000))


# -- DPMSolverMultistepScheduler ----------------------------------------------------------------
@st.composite
def multistep_configs(draw) -> tuple[dict, int]:
    cfg = draw(vp_base())
    cfg.update(draw(sigma_choice(("none", "none", "karras", "exponential", "beta", "lu", "flow"))))
    algorithm = draw(st.sampled_from(["dpmsolver++", "dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver"]))
    cfg["algorithm_type"] = algorithm
    data = algorithm.endswith("++")
    cfg["solver_order"] = draw(st.integers(1, 2 if algorithm == "sde-dpmsolver" else 3))
    cfg["solver_type"] = draw(st.sampled_from(["midpoint", "heun"]))
    cfg["prediction_type"] = prediction_for(draw, cfg, data)
    cfg["final_sigmas_type"] = draw(st.sampled_from(["zero", "sigma_min"])) if data else "sigma_min"
    cfg["lower_order_final"] = draw(st.booleans())
    cfg["euler_at_final"] = draw(st.booleans())
    cfg["thresholding"] = draw(st.booleans()) and cfg["prediction_type"] != "flow_prediction"
    if cfg["thresholding"]:
        cfg["sample_max_value"] = draw(st.sampled_from([1.0, 1.5]))
    if cfg["prediction_type"] in ("v_prediction", "sample") and not cfg.get("use_flow_sigmas"):
        cfg["rescale_betas_zero_snr"] = draw(st.booleans())
    cfg["timestep_spacing"] = draw(st.sampled_from(["linspace", "leading", "trailing"]))
    cfg["lambda_min_clipped"] = draw(st.sampled_from([-float("inf"), -float("inf"), -5.1]))
    if cfg["prediction_type"] == "epsilon":
        cfg["variance_type"] = draw(st.sampled_from([None, None, "learned_range"]))
    n = draw(st.integers(1, 100))
    if cfg["timestep_spacing"] == "leading":
        cfg["steps_offset"] = draw(st.sampled_from([0, 1]))
        assume(cfg["num_train_timesteps"] // (n + 1) > 0)
    return cfg, n


@SETTINGS
@given(
    case=multistep_configs(),
    api=st.sampled_from(["plan", "legacy"]),
    noise=st.sampled_from(["generator", "per_sample", "variance_noise"]),
    seed=st.integers(0, 2**16),
)
@example(case=({"use_karras_sigmas": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, 25), api="legacy", noise="generator", seed=0)
@example(case=({"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "solver_type": "heun"}, 100), api="plan", noise="variance_noise", seed=1)
@example(case=({"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}, 1), api="plan", noise="generator", seed=2)
def test_multistep_trajectory(case, api, noise, seed):
    cfg, n = case
    ours, state, ref = start("multistep", cfg, n, api)
    same_schedule(state, ref)
    model = model_for(ours, cfg)
    if cfg.get("variance_type"):
        base = model
        model = lambda x, t: torch.cat([base(x, t), torch.tanh(x)], dim=1)  # noqa: E731
    if noise == "variance_noise":
        gen = torch.Generator().manual_seed(seed)
        draws = [torch.randn(SHAPE, generator=gen) for _ in range(len(state.timesteps))]
        it_ours, it_ref = iter(draws), iter(draws)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 7))
        y = x.clone()
        for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
            a = state.step(model(x, t), t, x, variance_noise=next(it_ours)).prev_sample
            b = ref.step(model(y, rt), rt, y, variance_noise=next(it_ref)).prev_sample
            assert_close(a, b, f"x at step {i}")
            x, y = a, b
    else:
        run_both(state, ref, model, {"generator": None}, seed=seed, per_sample=noise == "per_sample")


# -- single-step, inverse, DEIS, UniPC ----------------------------------------------------------
@st.composite
def singlestep_configs(draw) -> tuple[dict, int]:
    cfg = draw(vp_base())
    cfg.update(draw(sigma_choice()))
    algorithm = draw(st.sampled_from(["dpmsolver++", "sde-dpmsolver++", "dpmsolver"]))
    cfg["algorithm_type"] = algorithm
    cfg["solver_order"] = draw(st.integers(1, 3))
    cfg["solver_type"] = draw(st.sampled_from(["midpoint", "heun"]))
    cfg["prediction_type"] = prediction_for(draw, cfg, algorithm != "dpmsolver")
    cfg["final_sigmas_type"] = draw(st.sampled_from(["zero", "sigma_min"])) if algorithm != "dpmsolver" else "sigma_min"
    cfg["lower_order_final"] = draw(st.booleans())
    cfg["thresholding"] = draw(st.booleans()) and algorithm != "dpmsolver" and cfg["prediction_type"] != "flow_prediction"
    # known gap: third-order ε-form (dpmsolver) at squaredcos' σ ≈ 2e4 amplifies our folded rounding past 1e-5
    assume(not (algorithm == "dpmsolver" and cfg.get("beta_schedule") == "squaredcos_cap_v2"))
    return cfg, draw(st.integers(1, 60))


@SETTINGS
@given(case=singlestep_configs(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 2**16))
def test_singlestep_trajectory(case, api, seed):
    cfg, n = case
    ours, state, ref = start("singlestep", cfg, n, api)
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg), {"generator": None}, seed=seed)


@st.composite
def inverse_configs(draw) -> tuple[dict, int]:
    cfg = draw(vp_base())
    cfg.update(draw(sigma_choice(("none", "none", "karras", "exponential", "beta"))))
    cfg["algorithm_type"] = draw(st.sampled_from(["dpmsolver++", "dpmsolver"]))
    cfg["solver_order"] = draw(st.integers(1, 3))
    cfg["solver_type"] = draw(st.sampled_from(["midpoint", "heun"]))
    cfg["prediction_type"] = draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))
    cfg["timestep_spacing"] = draw(st.sampled_from(["linspace", "leading", "trailing"]))
    cfg["lower_order_final"] = draw(st.booleans())
    cfg["lambda_min_clipped"] = draw(st.sampled_from([-float("inf"), -5.1]))
    cfg["final_sigmas_type"] = "sigma_min"
    # known gap: third-order ε-form (dpmsolver) at squaredcos' σ ≈ 2e4 amplifies our folded rounding past 1e-5
    assume(not (cfg["algorithm_type"] == "dpmsolver" and cfg.get("beta_schedule") == "squaredcos_cap_v2"))
    n = draw(st.integers(1, 60))
    assume(cfg["timestep_spacing"] != "leading" or cfg["num_train_timesteps"] // (n + 1) > 0)
    return cfg, n


@SETTINGS
@given(case=inverse_configs(), seed=st.integers(0, 2**16))
def test_inverse_trajectory(case, seed):
    cfg, n = case
    cfg = dict(cfg)
    cfg.pop("final_sigmas_type")
    ours, state, ref = start("inverse", cfg, n, "plan")
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg), {"generator": None}, seed=seed)


@st.composite
def deis_configs(draw) -> tuple[dict, int]:
    cfg = draw(vp_base())
    cfg.update(draw(sigma_choice()))
    cfg["solver_order"] = draw(st.integers(1, 3))
    cfg["prediction_type"] = prediction_for(draw, cfg)
    cfg["lower_order_final"] = draw(st.booleans())
    cfg["thresholding"] = draw(st.booleans()) and cfg["prediction_type"] != "flow_prediction"
    cfg["timestep_spacing"] = draw(st.sampled_from(["linspace", "leading", "trailing"]))
    n = draw(st.integers(1, 100))
    assume(cfg["timestep_spacing"] != "leading" or cfg["num_train_timesteps"] // (n + 1) > 0)
    return cfg, n


@SETTINGS
@given(case=deis_configs(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 2**16))
def test_deis_trajectory(case, api, seed):
    cfg, n = case
    ours, state, ref = start("deis", cfg, n, api)
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg), seed=seed)


@st.composite
def unipc_configs(draw) -> tuple[dict, int]:
    predict_x0 = draw(st.sampled_from([True, True, False]))
    # known gaps of the ε form (predict_x0=False), where our folded rounding is amplified: squaredcos'
    # σ ≈ 2e4, zero terminal SNR (σ/α = 2^12), and flow sigmas, whose σ_min final step repeats the
    # last σ (h = 0). Not drawn here; test_unipc_eps_form_* bound them.
    cfg = draw(vp_base() if predict_x0 else vp_base(schedules=("linear", "scaled_linear")))
    cfg.update(draw(sigma_choice() if predict_x0 else sigma_choice(("none", "karras", "exponential", "beta"))))
    if cfg.get("use_flow_sigmas") and draw(st.booleans()):
        cfg["use_karras_sigmas"] = True
    cfg["solver_order"] = draw(st.integers(1, 4))
    cfg["solver_type"] = draw(st.sampled_from(["bh1", "bh2"]))
    cfg["predict_x0"] = predict_x0
    cfg["prediction_type"] = prediction_for(draw, cfg, predict_x0)
    cfg["final_sigmas_type"] = draw(st.sampled_from(["zero", "sigma_min"])) if predict_x0 else "sigma_min"
    cfg["lower_order_final"] = draw(st.booleans())
    cfg["disable_corrector"] = draw(st.sampled_from([[], [], [0], [1, 3]]))
    cfg["thresholding"] = draw(st.booleans()) and predict_x0 and cfg["prediction_type"] != "flow_prediction"
    cfg["timestep_spacing"] = draw(st.sampled_from(["linspace", "leading", "trailing"]))
    if cfg["prediction_type"] in ("v_prediction", "sample") and not cfg.get("use_flow_sigmas") and predict_x0:
        cfg["rescale_betas_zero_snr"] = draw(st.booleans())
    n = draw(st.integers(1, 100))
    assume(cfg["timestep_spacing"] != "leading" or cfg["num_train_timesteps"] // (n + 1) > 0)
    # diffusers returns NaN on a final σ = 0 with bh1 or without lower_order_final (tested separately)
    assume(cfg["final_sigmas_type"] == "sigma_min" or (cfg["solver_type"] == "bh2" and cfg["lower_order_final"]))
    return cfg, n


@SETTINGS
@given(case=unipc_configs(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 2**16))
def test_unipc_trajectory(case, api, seed):
    cfg, n = case
    ours, state, ref = start("unipc", cfg, n, api)
    same_schedule(state, ref)
    # the ε form (predict_x0=False) is ill-conditioned at high noise and our folded weights round differently
    run_both(state, ref, model_for(ours, cfg), seed=seed, rtol=1e-5 if cfg["predict_x0"] else 1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_unipc_eps_form_at_zero_terminal_snr(prediction_type, seed):
    """The ε form divides by α_T = 2^-12 at the first step: float32 rounding is amplified alike in both."""
    cfg = {
        "solver_order": 1, "solver_type": "bh1", "predict_x0": False, "prediction_type": prediction_type,
        "final_sigmas_type": "sigma_min", "timestep_spacing": "linspace", "rescale_betas_zero_snr": True,
    }
    ours, state, ref = start("unipc", cfg, 2, "plan")
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg), seed=seed, rtol=2e-3)


@pytest.mark.parametrize("n", [2, 7, 30])
@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction", "epsilon"])
def test_unipc_eps_form_with_flow_sigmas_matches_in_float64(prediction_type, n):
    """A final step with h = 0 divides rounding noise by h: in float32 the two differ by up to 6%, in float64 not."""
    cfg = {
        "use_flow_sigmas": True, "flow_shift": 1.0, "solver_order": 1, "solver_type": "bh1", "predict_x0": False,
        "prediction_type": prediction_type, "final_sigmas_type": "sigma_min", "timestep_spacing": "linspace",
    }
    ours, state, ref = start("unipc", cfg, n, "plan")
    run_both(state, ref, model_for(ours, cfg), dtype=torch.float64, rtol=1e-7)


# -- EDM and SDE --------------------------------------------------------------------------------
@SETTINGS
@given(
    schedule=st.sampled_from(["karras", "exponential"]),
    algorithm=st.sampled_from(["dpmsolver++", "sde-dpmsolver++"]),
    order=st.integers(1, 3),
    solver_type=st.sampled_from(["midpoint", "heun"]),
    prediction=st.sampled_from(["epsilon", "v_prediction"]),
    final=st.sampled_from(["zero", "sigma_min"]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    n=st.integers(1, 100),
    seed=st.integers(0, 2**16),
)
def test_edm_trajectory(schedule, algorithm, order, solver_type, prediction, final, flags, n, seed):
    # diffusers leaves the third-order SDE update undefined (tested separately)
    assume(not (algorithm == "sde-dpmsolver++" and order == 3))
    lower, euler, thresholding = flags
    cfg = {
        "sigma_schedule": schedule,
        "algorithm_type": algorithm,
        "solver_order": order,
        "solver_type": solver_type,
        "prediction_type": prediction,
        "final_sigmas_type": final,
        "lower_order_final": lower,
        "euler_at_final": euler,
        "thresholding": thresholding,
    }
    ours, state, ref = start("edm", cfg, n, "plan")
    same_schedule(state, ref)
    run_both(state, ref, lambda x, t: 0.5 * torch.tanh(x) + 0.2 * torch.sin(float(t) + 3 * x), {"generator": None}, seed=seed)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from([None, "karras", "exponential", "beta"]),
    prediction=st.sampled_from(["epsilon", "v_prediction"]),
    spacing=st.sampled_from(["linspace", "leading", "trailing"]),
    n=st.integers(1, 25),
    s_noise=st.sampled_from([1.0, 0.5]),
)
def test_sde_trajectory_with_the_same_seed(seed, kind, prediction, spacing, n, s_noise):
    cfg = {"noise_sampler_seed": seed, "prediction_type": prediction, "timestep_spacing": spacing}
    if kind:
        cfg[f"use_{kind}_sigmas"] = True
    ours, state, ref = start("sde", cfg, n, "plan")
    same_schedule(state, ref)
    run_both(state, ref, simple_model, {"s_noise": s_noise})


# -- dtypes, custom schedules, img2img -------------------------------------------------------
@pytest.mark.parametrize(
    "kind, cfg",
    [
        ("multistep", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
        ("multistep", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
        ("singlestep", {"solver_order": 3}),
        ("deis", {"solver_order": 3}),
        ("unipc", {"solver_order": 3}),
        ("edm", {}),
    ],
)
def test_half_precision_matches(kind, cfg):
    ours, state, ref = start(kind, cfg, 12, "plan")
    model = simple_model if kind == "edm" else model_for(ours, cfg)
    x, y = run_both(state, ref, model, {} if kind in ("deis", "unipc") else {"generator": None}, dtype=torch.float16, rtol=1e-2)
    assert x.dtype == y.dtype == torch.float16


@pytest.mark.parametrize("kind", ["multistep", "singlestep"])
def test_custom_timesteps(kind):
    timesteps = [999, 850, 700, 512, 300, 200, 101, 40, 3]
    ours, ref = build(kind, {"prediction_type": "v_prediction"})
    state = ours.plan(timesteps=timesteps)
    ref.set_timesteps(timesteps=timesteps)
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, {"prediction_type": "v_prediction"}), {"generator": None})


@pytest.mark.parametrize("kind", ["multistep", "singlestep", "deis"])
def test_dynamic_shifting_mu_is_per_run(kind):
    cfg = {"use_flow_sigmas": True, "use_dynamic_shifting": True, "prediction_type": "flow_prediction"}
    ours, ref = build(kind, cfg)
    state = ours.plan(10, mu=0.8)
    ref.set_timesteps(10, mu=0.8)
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg), {} if kind == "deis" else {"generator": None})
    # diffusers writes e^0.8 into its config's flow_shift; ours stays as configured
    assert ours.config.flow_shift == 1.0


@pytest.mark.parametrize("time_shift_type", ["exponential", "linear"])
def test_unipc_custom_sigmas_and_mu(time_shift_type):
    cfg = {
        "use_flow_sigmas": True,
        "use_dynamic_shifting": True,
        "time_shift_type": time_shift_type,
        "prediction_type": "flow_prediction",
        "shift_terminal": 0.1,
    }
    ours, ref = build("unipc", cfg)
    sigmas = np.linspace(1.0, 1 / 8, 8)
    state = ours.plan(sigmas=sigmas.tolist(), mu=1.2)
    ref.set_timesteps(sigmas=sigmas, mu=1.2)
    same_schedule(state, ref)
    run_both(state, ref, model_for(ours, cfg))


def test_unipc_with_solver_p():
    ours, ref = build("unipc", {"solver_order": 3})
    ours_p = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")
    ref_p = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")
    ours, ref = UniPCMultistepScheduler(solver_order=3, solver_p=ours_p), diffusers.UniPCMultistepScheduler(solver_order=3, solver_p=ref_p)
    state = ours.plan(15)
    ref.set_timesteps(15)
    run_both(state, ref, model_for(ours, {}))
    assert json.loads(json.dumps(ours.config.to_dict()))["solver_p"] is None


@pytest.mark.parametrize("kind", ["multistep", "unipc", "deis", "edm"])
def test_img2img_begin_index_and_add_noise(kind):
    ours, ref = build(kind, {})
    state = ours.plan(20)
    ref.set_timesteps(20)
    begin = 8
    state.set_begin_index(begin)
    ref.set_begin_index(begin)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = state.timesteps[begin : begin + 1]
    a, b = state.add_noise(x0, noise, t), ref.add_noise(x0, noise, ref.timesteps[begin : begin + 1])
    assert_close(a, b, "add_noise")
    x, y = a, b
    model = simple_model if kind == "edm" else model_for(ours, {})
    for i in range(begin, 20):
        t, rt = state.timesteps[i], ref.timesteps[i]
        x = state.step(model(state.scale_model_input(x, t), t), t, x).prev_sample
        y = ref.step(model(ref.scale_model_input(y, rt), rt), rt, y).prev_sample
        assert_close(x, y, f"x at step {i}")


def test_add_noise_by_timestep_value():
    ours, ref = build("multistep", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    ts = ref.timesteps[[1, 6]]
    assert_close(ours.add_noise(x0, noise, ts.clone()), ref.add_noise(x0, noise, ts), "add_noise")


# -- known diffusers bugs: our decisions -----------------------------------------------------------
def test_duplicate_karras_timesteps_run_to_the_end():
    """#12771: squaredcos + Karras repeats timesteps; diffusers restarts at the second copy and fails."""
    cfg = {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}
    ours, ref = build("multistep", cfg)
    state = ours.plan(20)
    ref.set_timesteps(20)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    assert_matches(state.sigmas, ref.sigmas, "sigmas")
    assert len(set(state.timesteps.tolist())) < 20
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in state.timesteps:
        x = state.step(simple_model(x, t), t, x).prev_sample
    assert torch.isfinite(x).all() and state.step_index == 20
    y = x.clone()
    with pytest.raises(IndexError):
        for t in ref.timesteps:
            y = ref.step(simple_model(y, t), t, y).prev_sample


@pytest.mark.parametrize("kind", ["inverse", "edm"])
def test_third_order_sde_runs_where_diffusers_fails(kind):
    cfg = {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}
    ours, ref = build(kind, cfg)
    state = ours.plan(6)
    ref.set_timesteps(6)
    model = simple_model
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        x = state.step(model(state.scale_model_input(x, t), t), t, x, generator=g1).prev_sample
        if i < 2:  # the first and second orders agree with diffusers
            y = ref.step(model(ref.scale_model_input(y, rt), rt), rt, y, generator=g2).prev_sample
            assert_close(x, y, f"x at step {i}")
        elif i == 2:
            with pytest.raises((AssertionError, UnboundLocalError, NameError)):
                ref.step(model(ref.scale_model_input(y, rt), rt), rt, y, generator=g2)


def test_unipc_bh1_ends_on_the_clean_estimate_where_diffusers_gives_nan():
    cfg = {"solver_type": "bh1"}
    ours, state, ref = start("unipc", cfg, 10, "plan")
    model = model_for(ours, cfg)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
        x = state.step(model(x, t), t, x).prev_sample
        y = ref.step(model(y, rt), rt, y).prev_sample
    assert y.isnan().all() and torch.isfinite(x).all()


def test_deis_algorithm_reads_as_dpmsolver_pp_with_zero_final_sigma():
    ours = DPMSolverMultistepScheduler(algorithm_type="deis")
    assert ours.config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match="final_sigmas_type"):
        diffusers.DPMSolverMultistepScheduler(algorithm_type="deis")
    ref = diffusers.DPMSolverMultistepScheduler(algorithm_type="deis", final_sigmas_type="sigma_min")
    assert DPMSolverMultistepScheduler(algorithm_type="deis", final_sigmas_type="sigma_min").config.algorithm_type == ref.config.algorithm_type


# -- configs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(PAIRS))
def test_config_fields_and_compatibles_match(kind, tmp_path):
    ours_cls, ref_cls = PAIRS[kind]
    ours, ref = ours_cls(), ref_cls()
    assert sorted(ours.compatibles_names) == sorted(ref._compatibles)
    fields = ours.config.model_dump()
    ref_fields = {k: v for k, v in ref.config.items() if not k.startswith("_")}
    assert set(fields) == set(ref_fields)
    for key, value in fields.items():
        expected = ref_fields[key]
        assert value == (tuple(expected) if isinstance(expected, list) else expected), key
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    ours_json = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    ref_json = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    drop = {"_diffusers_version"}
    assert {k: v for k, v in ours_json.items() if k not in drop} == {k: v for k, v in ref_json.items() if k not in drop}
    again = ours_cls.from_pretrained(tmp_path / "ref")
    assert again.config.model_dump() == fields
    ref_cls.from_pretrained(tmp_path / "ours")


@pytest.mark.parametrize(
    "source, target",
    [("multistep", "unipc"), ("unipc", "deis"), ("deis", "multistep"), ("multistep", "singlestep"), ("singlestep", "sde")],
)
def test_from_config_swap(source, target):
    cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "prediction_type": "v_prediction"}
    ours_src, ref_src = build(source, cfg)
    extra = {"noise_sampler_seed": 0} if target == "sde" else {}
    ours = PAIRS[target][0].from_config(ours_src.config, **extra)
    ref = PAIRS[target][1].from_config(ref_src.config, **extra)
    fields = ours.config.model_dump()
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in ((k, ref.config[k]) for k in fields)} == fields
    state = ours.plan(8)
    ref.set_timesteps(8)
    same_schedule(state, ref)
    model = simple_model if target == "sde" else model_for(ours, cfg)
    run_both(state, ref, model, {} if target in ("deis", "unipc", "sde") else {"generator": None})


@pytest.mark.parametrize(
    "kind, cfg, fields",
    [
        ("multistep", {"use_karras_sigmas": True, "use_beta_sigmas": True}, ["use_karras_sigmas", "use_beta_sigmas"]),
        ("multistep", {"algorithm_type": "dpmsolver"}, ["final_sigmas_type", "algorithm_type"]),
        ("multistep", {"algorithm_type": "sde-dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"}, ["solver_order"]),
        ("multistep", {"use_lu_lambdas": True, "use_karras_sigmas": True}, ["use_lu_lambdas"]),
        ("multistep", {"use_flow_sigmas": True, "use_exponential_sigmas": True}, ["use_flow_sigmas"]),
        ("multistep", {"trained_betas": [0.1, 0.2], "num_train_timesteps": 3}, ["trained_betas", "num_train_timesteps"]),
        ("multistep", {"solver_order": 4}, ["solver_order"]),
        ("singlestep", {"algorithm_type": "sde-dpmsolver"}, ["algorithm_type"]),
        ("edm", {"prediction_type": "sample"}, ["prediction_type"]),
        ("sde", {"prediction_type": "sample"}, ["prediction_type"]),
        ("unipc", {"shift_terminal": 0.1}, ["shift_terminal", "use_flow_sigmas"]),
        ("unipc", {"predict_x0": False}, ["predict_x0", "final_sigmas_type"]),
        ("deis", {"algorithm_type": "sde-dpmsolver++"}, ["algorithm_type"]),
    ],
)
def test_invalid_combinations_are_rejected_naming_the_fields(kind, cfg, fields):
    with pytest.raises(ConfigError) as info:
        PAIRS[kind][0](**cfg)
    for field in fields:
        assert field in str(info.value)


def test_plan_argument_errors():
    s = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    with pytest.raises(ValueError, match="custom timesteps"):
        s.plan(timesteps=[900, 500, 100])
    with pytest.raises(ValueError, match="exactly one"):
        s.plan(10, timesteps=[900, 100])
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        DPMSolverMultistepScheduler().plan(10, mu=0.5)
    with pytest.raises(ValueError, match="mu"):
        UniPCMultistepScheduler(use_flow_sigmas=True, use_dynamic_shifting=True).plan(10)
    state = DPMSolverMultistepScheduler().plan(5)
    with pytest.raises(ValueError, match="not one of"):
        state.step(torch.zeros(SHAPE), 12345, torch.zeros(SHAPE))
    with pytest.raises(ValueError, match="set_timesteps"):
        DPMSolverMultistepScheduler().step(torch.zeros(SHAPE), 10, torch.zeros(SHAPE))


def test_steps_past_the_end_are_refused():
    state = DPMSolverMultistepScheduler().plan(3)
    x = torch.zeros(SHAPE)
    for t in state.timesteps:
        x = state.step(x, t, x).prev_sample
    with pytest.raises(ValueError, match="all 3 steps"):
        state.step(x, state.timesteps[-1], x)


def test_untimed_schedulers_look_like_diffusers_before_set_timesteps():
    for kind in ("multistep", "inverse", "unipc", "deis", "edm", "sde"):
        ours, ref = build(kind, {})
        assert_matches(ours.timesteps, ref.timesteps, kind)
        assert_matches(ours.sigmas, ref.sigmas, kind)
