"""FlowMatchEuler/HeunDiscreteScheduler give diffusers' numbers: timesteps, sigmas, whole trajectories."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_flowmatch.flow_match_euler import FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffkit_scheduler_flowmatch.flow_match_heun import FlowMatchHeunDiscreteScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)
logging.getLogger("diffusers").setLevel(logging.ERROR)

SETTINGS = settings(max_examples=30, deadline=None)
SHAPE = (2, 3, 4, 4)
REF_EULER, REF_HEUN = diffusers.FlowMatchEulerDiscreteScheduler, diffusers.FlowMatchHeunDiscreteScheduler


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic velocity: a function of (x, t) only, in x's dtype."""
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    return (0.1 * x.float() + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 37.0 + phase)).to(x.dtype)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, f"{what}: {ours.dtype}{tuple(ours.shape)} vs {ref.dtype}{tuple(ref.shape)}"
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


@st.composite
def euler_cases(draw) -> tuple[dict, dict, int]:
    cfg: dict = {"num_train_timesteps": draw(st.sampled_from([1000, 1000, 250]))}
    if draw(st.booleans()):
        cfg["use_dynamic_shifting"] = True
        cfg["time_shift_type"] = draw(st.sampled_from(["exponential", "linear"]))
    else:
        cfg["shift"] = draw(st.sampled_from([1.0, 3.0, 0.5]))
    shape = draw(st.sampled_from([None, None, "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"]))
    if shape:
        cfg[shape] = True
    cfg["invert_sigmas"] = draw(st.sampled_from([False, False, True]))
    cfg["stochastic_sampling"] = draw(st.booleans())
    if draw(st.booleans()):
        cfg["shift_terminal"] = draw(st.sampled_from([0.02, 0.2]))
    n = draw(st.integers(2 if cfg.get("shift_terminal") else 1, 100))
    call: dict = {}
    if cfg.get("use_dynamic_shifting"):
        call["mu"] = draw(st.sampled_from([0.5, 1.15, 0.8]))
    custom = draw(st.sampled_from([None, None, "sigmas", "timesteps", "both"]))
    grid = torch.linspace(1.0, 1.0 / n, n)
    if custom in ("sigmas", "both"):
        call["sigmas"] = grid.tolist()
    if custom in ("timesteps", "both"):
        call["timesteps"] = (grid * cfg["num_train_timesteps"]).tolist()
    if custom and draw(st.booleans()):
        n = None  # counted from the custom values
    return cfg, call, n


@SETTINGS
@given(
    case=euler_cases(),
    api=st.sampled_from(["plan", "legacy"]),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.bfloat16, torch.float16]),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(
    case=({"use_dynamic_shifting": True, "shift_terminal": 0.02, "use_karras_sigmas": True, "stochastic_sampling": True},
          {"mu": 1.15}, 28),
    api="legacy", dtype=torch.bfloat16, per_sample=True, seed=0,
)
def test_euler_trajectory(case, api, dtype, per_sample, seed):
    cfg, call, n = case
    ours, ref = FlowMatchEulerDiscreteScheduler(**cfg), REF_EULER(**cfg)
    assert ours.sigma_min == ref.sigma_min and ours.sigma_max == ref.sigma_max
    ref.set_timesteps(n, **call)
    if api == "legacy":
        ours.set_timesteps(n, **call)
        state = ours
    else:
        state = ours.plan(n, **call)
    assert_close(state.timesteps, ref.timesteps, "timesteps")
    assert_close(state.sigmas, ref.sigmas, "sigmas")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 5)).to(dtype)
    y = x.clone()
    make = (lambda: [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]) if per_sample else (
        lambda: torch.Generator().manual_seed(seed))
    g_ours, g_ref = make(), make()
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        a = state.step(fake_model(x, t), t, x, generator=g_ours).prev_sample
        b = ref.step(fake_model(y, rt), rt, y, generator=g_ref).prev_sample
        assert_close(a, b, f"step {i} (t={float(t):.4f})")
        assert state.step_index == ref.step_index
        x, y = a, b


@SETTINGS
@given(
    shift=st.sampled_from([1.0, 3.0]),
    n=st.integers(1, 60),
    churn=st.sampled_from([0.0, 0.0, 0.4, 10.0]),
    tmin=st.sampled_from([0.0, 0.3]),
    dtype=st.sampled_from([torch.float32, torch.float16]),
    api=st.sampled_from(["plan", "legacy"]),
    seed=st.integers(0, 2**16),
)
def test_heun_trajectory(shift, n, churn, tmin, dtype, api, seed):
    ours, ref = FlowMatchHeunDiscreteScheduler(shift=shift), REF_HEUN(shift=shift)
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert_close(state.timesteps, ref.timesteps, "timesteps")
    assert_close(state.sigmas, ref.sigmas, "sigmas")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    kwargs = {"s_churn": churn, "s_tmin": tmin}
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        assert state.state_in_first_order == ref.state_in_first_order
        a = state.step(fake_model(x, t), t, x, generator=g_ours, **kwargs).prev_sample
        b = ref.step(fake_model(y, rt), rt, y, generator=g_ref, **kwargs).prev_sample
        assert_close(a, b, f"step {i}")
        x, y = a, b


def test_default_runs_match_in_each_dtype():
    for ours, ref, dtype in (
        (FlowMatchEulerDiscreteScheduler(shift=3.0), REF_EULER(shift=3.0), torch.bfloat16),
        (FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), REF_EULER(stochastic_sampling=True), torch.float32),
        (FlowMatchHeunDiscreteScheduler(shift=3.0), REF_HEUN(shift=3.0), torch.float16),
    ):
        state = ours.plan(8)
        ref.set_timesteps(8)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)
        y = x.clone()
        g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
            x = state.step(fake_model(x, t), t, x, generator=g_ours).prev_sample
            y = ref.step(fake_model(y, rt), rt, y, generator=g_ref).prev_sample
            assert x.dtype == dtype
            assert_matches(x, y, f"{dtype} step at t={float(t)}")


# -- img2img, noise, per-token ----------------------------------------------------------------------
@pytest.mark.parametrize("begin", [0, 3])
def test_euler_scale_noise_and_begin_index(begin):
    ours, ref = FlowMatchEulerDiscreteScheduler(shift=3.0), REF_EULER(shift=3.0)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    start = ref.timesteps[begin : begin + 1].repeat(SHAPE[0])
    assert_matches(ours.scale_noise(x0, start, noise), ref.scale_noise(x0, start, noise))
    ours.set_begin_index(begin)
    ref.set_begin_index(begin)
    x = ours.scale_noise(x0, start, noise)
    y = ref.scale_noise(x0, start, noise)
    assert_matches(x, y)
    for t, rt in zip(ours.timesteps[begin:], ref.timesteps[begin:], strict=True):
        x = ours.step(fake_model(x, t), t, x).prev_sample
        y = ref.step(fake_model(y, rt), rt, y).prev_sample
    assert_matches(x, y)


def test_heun_scale_noise():
    ours, ref = FlowMatchHeunDiscreteScheduler(shift=2.0), REF_HEUN(shift=2.0)
    ours.set_timesteps(6)
    ref.set_timesteps(6)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = ref.timesteps[3]
    assert_matches(ours.scale_noise(x0, t, noise), ref.scale_noise(x0, t, noise))
    assert ours.step_index == ref.step_index == 4  # the second of the repeated timestep


@pytest.mark.parametrize("stochastic", [False, True])
def test_per_token_timesteps(stochastic):
    ours, ref = FlowMatchEulerDiscreteScheduler(stochastic_sampling=stochastic), REF_EULER(stochastic_sampling=stochastic)
    ours.set_timesteps(5)
    ref.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 6, 4, generator=g)
    v = torch.randn(2, 6, 4, generator=g)
    per_token = torch.rand(2, 6, generator=g) * 1000
    t = ref.timesteps[0]
    a = ours.step(v, t, tokens, per_token_timesteps=per_token, generator=torch.Generator().manual_seed(1))
    b = ref.step(v, t, tokens, per_token_timesteps=per_token, generator=torch.Generator().manual_seed(1))
    assert_matches(a.prev_sample, b.prev_sample)


def test_set_shift_changes_later_schedules_as_in_diffusers():
    ours, ref = FlowMatchEulerDiscreteScheduler(shift=1.0), REF_EULER(shift=1.0)
    ours.set_shift(3.0)
    ref.set_shift(3.0)
    assert ours.shift == ref.shift == 3.0
    ours.set_timesteps(7)
    ref.set_timesteps(7)
    assert_matches(ours.sigmas, ref.sigmas, "sigmas")
    assert_matches(ours.timesteps, ref.timesteps, "timesteps")
    assert_matches(FlowMatchEulerDiscreteScheduler(shift=1.0).plan(7, shift=3.0).sigmas, ref.sigmas, "sigmas")


def test_errors_match_diffusers_where_it_raises():
    dyn = {"use_dynamic_shifting": True}
    with pytest.raises(ValueError, match="mu"):
        FlowMatchEulerDiscreteScheduler(**dyn).set_timesteps(4)
    with pytest.raises(ValueError, match="mu"):
        REF_EULER(**dyn).set_timesteps(4)
    for ours, ref in ((FlowMatchEulerDiscreteScheduler(), REF_EULER()), (FlowMatchHeunDiscreteScheduler(), REF_HEUN())):
        ours.set_timesteps(3)
        ref.set_timesteps(3)
        x = torch.randn(SHAPE)
        for t in (1, torch.tensor(999)):
            with pytest.raises(ValueError, match="integer"):
                ours.step(x, t, x)
            with pytest.raises(ValueError, match="integer"):
                ref.step(x, t, x)


# -- configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ours_cls, ref_cls, cfg",
    [
        (FlowMatchEulerDiscreteScheduler, REF_EULER,
         {"shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.6, "shift_terminal": 0.1,
          "time_shift_type": "linear", "use_beta_sigmas": True}),
        (FlowMatchHeunDiscreteScheduler, REF_HEUN, {"shift": 2.5, "num_train_timesteps": 500}),
    ],
)
def test_config_files_interoperate(ours_cls, ref_cls, cfg, tmp_path):
    ours, ref = ours_cls(**cfg), ref_cls(**cfg)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: ref_cls.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert ours_cls.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }
    assert list(ours.compatibles_names) == ref._compatibles == []


def test_swap_between_euler_and_heun():
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0, num_train_timesteps=500)
    heun = FlowMatchHeunDiscreteScheduler.from_config(euler.config)
    ref = REF_HEUN.from_config(REF_EULER(shift=3.0, num_train_timesteps=500).config)
    assert heun.config.model_dump() == {k: ref.config[k] for k in heun.config.model_dump()}
    state = heun.plan(5)
    ref.set_timesteps(5)
    assert_matches(state.sigmas, ref.sigmas)
    back = FlowMatchEulerDiscreteScheduler.from_config(heun.config)
    assert back.config.shift == 3.0 and back.config.num_train_timesteps == 500
