import logging
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_lcm._consistency import boundary_scalings, evenly_selected, skipping_schedule
from diffkit_scheduler_lcm.lcm import LCMScheduler
from diffkit_scheduler_lcm.tcd import TCDScheduler

torch.set_num_threads(1)


def fake_model(x, t):
    return 0.2 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 50 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def test_registered_and_light_hooks():
    assert registry.get("scheduler", "LCMScheduler") is LCMScheduler
    assert registry.get("scheduler", "TCDScheduler") is TCDScheduler
    code = "import sys, diffkit_scheduler_lcm.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    expected = {
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "trained_betas": None, "original_inference_steps": 50, "clip_sample": False, "clip_sample_range": 1.0,
        "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon", "thresholding": False,
        "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "leading",
        "timestep_scaling": 10.0, "rescale_betas_zero_snr": False,
    }
    assert LCMScheduler().config.model_dump() == expected == TCDScheduler().config.model_dump()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"original_inference_steps": 2000}, r"original_inference_steps \(2000\) must not exceed num_train_timesteps"),
        ({"beta_schedule": "sigmoid"}, r"beta_schedule"),
        ({"num_train_timesteps": 4, "trained_betas": [0.1]}, r"trained_betas has 1 values"),
        ({"timestep_scaling": 0}, r"timestep_scaling"),
        ({"prediction_type": "flow"}, r"prediction_type"),
    ],
)
def test_invalid_configs_are_rejected_naming_the_fields(kwargs, message):
    for cls in (LCMScheduler, TCDScheduler):
        with pytest.raises(ConfigError, match=message):
            cls(**kwargs)


def test_tcd_warns_that_it_never_thresholds(caplog):
    with caplog.at_level(logging.WARNING, logger="diffkit.scheduler.tcd"):
        TCDScheduler(clip_sample=True)
    assert "never thresholds or clips" in caplog.text


def test_schedule_maths():
    origin = skipping_schedule(1000, 50, 1.0)
    assert origin[:3].tolist() == [19, 39, 59] and origin[-1] == 999
    assert evenly_selected(origin, 4).tolist() == [999, 759, 499, 259]
    assert skipping_schedule(1000, 50, 0.5)[-1] == 499
    c_skip, c_out = boundary_scalings(torch.tensor([0, 999]), 10.0)
    assert c_skip[0] == 1 and c_out[0] == 0  # x0 = x at t = 0: the consistency boundary
    assert torch.allclose(c_skip[1] ** 0.5 * 0 + c_out[1], torch.tensor(1.0), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one of num_inference_steps or timesteps"),
        ({"num_inference_steps": 4, "timesteps": [999]}, "exactly one"),
        ({"num_inference_steps": 51}, r"leaves 50 timesteps, fewer than num_inference_steps \(51\)"),
        ({"num_inference_steps": 30, "strength": 0.5}, r"50 x 0.5.*fewer than num_inference_steps \(30\)"),
        ({"num_inference_steps": 4, "strength": 0.0}, r"strength must lie in \(0, 1\]"),
        ({"timesteps": [500, 600]}, "strictly descending"),
        ({"timesteps": [999, -1]}, r"\[0, num_train_timesteps=1000\)"),
        ({"num_inference_steps": 4, "original_inference_steps": 5000}, "must not exceed num_train_timesteps"),
    ],
)
def test_plan_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LCMScheduler().plan(**kwargs)


def test_tcd_explicit_original_steps_draw_from_every_timestep():
    with pytest.raises(ValueError, match=r"must not exceed original_inference_steps \(50\)"):
        TCDScheduler().plan(60, original_inference_steps=50)
    assert TCDScheduler().plan(4, original_inference_steps=50).timesteps.tolist() == [999, 749, 499, 249]
    assert LCMScheduler().plan(4, original_inference_steps=50).timesteps.tolist() == [999, 759, 499, 259]


def test_eta_is_checked():
    state = TCDScheduler().plan(4)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="eta"):
        state.step(x, state.timesteps[0], x, eta=1.5)


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from([LCMScheduler, TCDScheduler]), n=st.integers(1, 25), seed=st.integers(0, 99))
def test_states_of_one_scheduler_are_independent(kind, n, seed):
    scheduler = kind()
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(seed))

    def run(state, g):
        y = x
        for t in state.timesteps:
            y = state.step(fake_model(y, t), t, y, generator=g).prev_sample
        return y

    a, b = scheduler.plan(n), scheduler.plan(max(1, n // 2))
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    xa, xb = x, x
    for ta, tb in zip(a.timesteps, [*b.timesteps, *[None] * (len(a) - len(b))], strict=True):
        xa = a.step(fake_model(xa, ta), ta, xa, generator=ga).prev_sample
        if tb is not None:
            xb = b.step(fake_model(xb, tb), tb, xb, generator=gb).prev_sample
    assert torch.equal(xa, run(scheduler.plan(n), torch.Generator().manual_seed(1)))
    assert torch.equal(xb, run(scheduler.plan(max(1, n // 2)), torch.Generator().manual_seed(2)))


def test_final_step_is_clean_and_draws_nothing():
    for cls in (LCMScheduler, TCDScheduler):
        state = cls().plan(timesteps=[999, 759, 499, 259], strength=0.5)
        assert state.timesteps.tolist() == [499, 259]
        x = torch.randn(1, 2, 4, 4)
        state.step(fake_model(x, 499), state.timesteps[0], x)
        g = torch.Generator().manual_seed(0)
        before = g.get_state()
        out = state.step(fake_model(x, 259), state.timesteps[1], x, generator=g, return_dict=False)
        assert torch.equal(out[0], out[1]) and torch.equal(g.get_state(), before)
        with pytest.raises(ValueError, match="all 2 steps"):
            state.step(x, state.timesteps[1], x)


def test_legacy_surface_and_steps_off_the_schedule():
    s = LCMScheduler()
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(x, 999, x)
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [999, 759, 499, 259] and s.num_inference_steps == 4
    out = s.step(x, 999, x, generator=torch.Generator().manual_seed(0))
    assert s.step_index == 1 and out.denoised.shape == x.shape
    # a timestep the schedule does not list is stepped with its own coefficients
    off = s.step(x, 500, x, generator=torch.Generator().manual_seed(0))
    assert s.step_index == 2 and torch.isfinite(off.prev_sample).all()
    t = TCDScheduler()
    t.set_timesteps(2)
    prev, noised = t.step(x, t.timesteps[0], x, 0.0, None, False)  # diffusers' positional order
    assert torch.equal(prev, noised)


def test_step_on_an_accelerator_reads_no_tensor_values():
    for cls, kwargs in ((LCMScheduler, {}), (TCDScheduler, {"eta": 0.5})):
        state = cls(thresholding=True).plan(4, device="meta")
        x = torch.empty(1, 3, 4, 4, device="meta")
        for t in state.timesteps:
            x = state.step(torch.empty(1, 3, 4, 4, device="meta"), t, x, **kwargs).prev_sample
        assert x.device.type == "meta" and state.step_index == 4


def test_shared_scalar_helpers_round_like_zero_dim_tensors():
    """``schedules.scalar_rows``/``axpby_into``, which these schedulers rely on for exact half-precision steps."""
    from diffkit import schedules as S

    coef = torch.tensor([[0.123456789, 0.987654321]])
    h = torch.randn(1000, generator=torch.Generator().manual_seed(0)).half()
    (rounded,), _ = S.scalar_rows(coef, torch.float16)
    assert torch.equal(coef[0, 0] * h, rounded * h)  # 0-d float32 on the left: cast to half first
    (full,), _ = S.scalar_rows(coef)
    assert torch.equal(h / coef[0, 0], h / full)  # on the right: kept in float32
    x, y = torch.randn(50), torch.randn(50)
    expected = 0.3 * x + 0.7 * y
    for own_x, own_y in ((False, False), (True, False), (False, True), (True, True)):
        assert torch.equal(S.axpby_into(0.3, x.clone(), 0.7, y.clone(), own_x=own_x, own_y=own_y), expected)
