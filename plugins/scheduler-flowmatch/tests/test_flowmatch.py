import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_flowmatch import _flow as F
from diffkit_scheduler_flowmatch.flow_match_euler import FlowMatchEulerDiscreteScheduler as Euler
from diffkit_scheduler_flowmatch.flow_match_heun import FlowMatchHeunDiscreteScheduler as Heun

torch.set_num_threads(1)


def velocity(x, t):
    return 0.3 * x + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 100)


def test_registered_and_light_hooks():
    assert registry.get("scheduler", "FlowMatchEulerDiscreteScheduler") is Euler
    assert registry.get("scheduler", "FlowMatchHeunDiscreteScheduler") is Heun
    code = "import sys, diffkit_scheduler_flowmatch.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    assert Euler().config.model_dump() == {
        "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5,
        "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096, "invert_sigmas": False,
        "shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
        "time_shift_type": "exponential", "stochastic_sampling": False,
    }
    assert Heun().config.model_dump() == {"num_train_timesteps": 1000, "shift": 1.0}
    assert Heun.order == 2 and Heun().plan(3).order == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"use_karras_sigmas": True, "use_beta_sigmas": True}, r"use_karras_sigmas=True, use_beta_sigmas=True"),
        ({"time_shift_type": "cubic"}, "time_shift_type"),
        ({"shift_terminal": 1.0}, "shift_terminal"),
        ({"shift": 0}, "shift"),
    ],
)
def test_invalid_configs_are_rejected_naming_the_fields(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Euler(**kwargs)


def test_sigma_maths():
    assert F.np_linspace(1.0, 0.0, 5).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    sig = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    assert torch.allclose(F.shift_sigmas(sig, 3.0), torch.tensor([1.0, 0.75, 0.5], dtype=torch.float64))
    # the exponential time shift with μ = ln s is the static shift s
    assert torch.allclose(F.time_shift("exponential", 1.0986122886681098, sig), F.shift_sigmas(sig, 3.0))
    assert F.stretch_to_terminal(torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64), 0.1)[-1].item() == pytest.approx(0.1)
    assert F.dynamic_shift_mu(256, 256, 4096, 0.5, 1.15) == pytest.approx(0.5)
    assert F.dynamic_shift_mu(4096, 256, 4096, 0.5, 1.15) == pytest.approx(1.15)


def test_plan_options_and_errors():
    s = Euler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="mu must be passed"):
        s.plan(4)
    assert torch.equal(s.plan(4, image_seq_len=4096).sigmas, s.plan(4, mu=F.dynamic_shift_mu(4096, 256, 4096, 0.5, 1.15)).sigmas)
    with pytest.raises(ValueError, match="same length"):
        Euler().plan(sigmas=[1.0, 0.5], timesteps=[1000.0])
    with pytest.raises(ValueError, match="must equal the number"):
        Euler().plan(3, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="pass num_inference_steps, sigmas or timesteps"):
        Euler().plan()
    with pytest.raises(ValueError, match="last sigma"):
        Euler(shift_terminal=0.1).plan(1)
    inverted = Euler(invert_sigmas=True).plan(4)
    assert inverted.sigmas[-1] == 1 and inverted.sigmas[0] < inverted.sigmas[1]
    custom = Euler(shift=3.0).plan(timesteps=[900.0, 300.0])
    assert custom.timesteps.tolist() == [900.0, 300.0] and custom.sigmas[-1] == 0


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), shift=st.sampled_from([1.0, 3.0]))
def test_euler_integrates_a_constant_velocity_exactly(n, shift):
    """With v = ε - x0 constant, Euler lands on x0 whatever the schedule."""
    state = Euler(shift=shift).plan(n)
    x0, noise = torch.full((1, 2, 2, 2), 0.25), torch.full((1, 2, 2, 2), -1.0)
    x = state.sigmas[0] * noise + (1 - state.sigmas[0]) * x0
    for t in state.timesteps:
        x = state.step(noise - x0, t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-5)


def test_heun_interleaves_and_alternates():
    state = Heun().plan(3)
    assert len(state.timesteps) == 5 and state.timesteps[1] == state.timesteps[2]
    assert len(state.sigmas) == 6 and state.sigmas[-1] == 0
    x = torch.ones(1, 2, 2, 2)
    phases = []
    for t in state.timesteps:
        phases.append(state.state_in_first_order)
        x = state.step(velocity(x, t), t, x).prev_sample
    assert phases == [True, False, True, False, True]
    with pytest.raises(ValueError, match="all 5 steps"):
        state.step(x, state.timesteps[-1], x)


def test_first_step_lookup_takes_the_second_of_a_repeated_timestep():
    state = Heun().plan(4)
    x = torch.zeros(1, 1, 2, 2)
    state.step(x, state.timesteps[3], x)  # timesteps[3] == timesteps[4]: the run starts at 4
    assert state.step_index == 5
    euler = Euler().plan(4)
    with pytest.raises(ValueError, match="not one of this run's timesteps"):
        euler.step(x, 123.5, x)


def test_integer_timesteps_are_rejected():
    state = Euler().plan(3)
    x = torch.zeros(1, 1, 2, 2)
    for t in (5, torch.tensor(5), torch.tensor([5], dtype=torch.int32)):
        with pytest.raises(ValueError, match="integer timestep"):
            state.step(x, t, x)


def test_immutable_scheduler_and_per_call_shift():
    s = Euler()
    with pytest.raises(AttributeError, match="immutable"):
        s.sigma_max = 2.0
    a, b = s.plan(5, shift=3.0), s.plan(5)
    assert not torch.equal(a.sigmas, b.sigmas) and s.shift == 1.0


def test_step_on_an_accelerator_reads_no_tensor_values():
    for cfg in ({}, {"stochastic_sampling": True}):
        state = Euler(**cfg).plan(4, device="meta")
        x = torch.empty(1, 3, 4, 4, device="meta", dtype=torch.bfloat16)
        for t in state.timesteps:
            x = state.step(torch.empty(1, 3, 4, 4, device="meta", dtype=torch.bfloat16), t, x).prev_sample
        assert x.device.type == "meta" and x.dtype == torch.bfloat16 and state.step_index == 4
    heun = Heun().plan(3, device="meta")
    x = torch.empty(1, 3, 4, 4, device="meta")
    for t in heun.timesteps:
        x = heun.step(torch.empty(1, 3, 4, 4, device="meta"), t, x).prev_sample
    assert heun.step_index == 5
