import math
import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_consistency.cm_stochastic_iterative import CMStochasticIterativeScheduler, boundary_scalings


def test_registered_and_hooks_stay_light():
    assert registry.get("scheduler", "CMStochasticIterativeScheduler") is CMStochasticIterativeScheduler
    code = "import sys, diffkit_scheduler_consistency.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_and_invalid_configs():
    assert CMStochasticIterativeScheduler().config.model_dump() == {
        "num_train_timesteps": 40,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "sigma_data": 0.5,
        "s_noise": 1.0,
        "rho": 7.0,
        "clip_denoised": True,
    }
    with pytest.raises(ConfigError, match="num_train_timesteps"):
        CMStochasticIterativeScheduler(num_train_timesteps=1)
    with pytest.raises(ConfigError, match=r"sigma_min \(9.0\) must be smaller than sigma_max \(8.0\)"):
        CMStochasticIterativeScheduler(sigma_min=9.0, sigma_max=8.0)
    with pytest.raises(ConfigError, match="rho"):
        CMStochasticIterativeScheduler(rho=0)


def test_plan_arguments():
    scheduler = CMStochasticIterativeScheduler()
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.plan()
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.plan(2, timesteps=[3, 0])
    with pytest.raises(ValueError, match="strictly descending"):
        scheduler.plan(timesteps=[0, 22])
    with pytest.raises(ValueError, match=r"\[0, num_train_timesteps=40\)"):
        scheduler.plan(timesteps=[40, 0])
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps"):
        scheduler.plan(41)


def test_levels_and_model_timesteps():
    state = CMStochasticIterativeScheduler().plan(timesteps=[39, 20, 0])
    sigmas = state.sigmas.double()
    # step i runs at the ramp position of the i-th smallest index: 0 → σ_max, 20/39, 39/39 → σ_min; then σ_min
    assert math.isclose(sigmas[0].item(), 80.0, rel_tol=1e-6) and math.isclose(sigmas[-1].item(), 0.002, rel_tol=1e-6)
    ramp = 20 / 39
    assert math.isclose(sigmas[1].item(), (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, rel_tol=1e-6)
    assert state.timesteps.dtype == torch.float64
    assert torch.allclose(state.timesteps, 250 * torch.log(sigmas[:3]), rtol=1e-6)
    assert state.custom_timesteps and not CMStochasticIterativeScheduler().plan(2).custom_timesteps


def test_boundary_condition_makes_the_model_the_identity_at_sigma_min():
    c_skip, c_out = boundary_scalings(torch.tensor(0.002, dtype=torch.float64), 0.002, 0.5)
    assert c_skip.item() == 1.0 and c_out.item() == 0.0
    c_skip, c_out = boundary_scalings(80.0, 0.002, 0.5)
    assert c_skip < 1e-4 and math.isclose(c_out, 79.998 * 0.5 / math.hypot(80.0, 0.5))


def test_one_step_draws_no_noise_and_multistep_renoises():
    scheduler = CMStochasticIterativeScheduler(clip_denoised=False)
    x, out = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    state = scheduler.plan(1)
    g = torch.Generator().manual_seed(0)
    scaled = state.scale_model_input(x, state.timesteps[0])
    assert torch.allclose(scaled, x / math.sqrt(80.0**2 + 0.25))
    one = state.step(out, state.timesteps[0], x, generator=g).prev_sample
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())
    c_skip, c_out = boundary_scalings(80.0, 0.002, 0.5)
    assert torch.allclose(one, c_out * out + c_skip * x, atol=1e-6)
    multi = scheduler.plan(2)
    multi.scale_model_input(x, multi.timesteps[0])
    two = multi.step(out, multi.timesteps[0], x, generator=torch.Generator().manual_seed(0)).prev_sample
    sigma_next = multi.sigmas[1].item()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(two, one + z * math.sqrt(sigma_next**2 - 0.002**2), atol=1e-5)


def test_integer_timesteps_are_refused_and_states_are_independent():
    scheduler = CMStochasticIterativeScheduler()
    state = scheduler.plan(3)
    with pytest.raises(ValueError, match="not an integer step index"):
        state.step(torch.zeros(1, 1), 0, torch.zeros(1, 1))
    other = scheduler.plan(3)
    state.scale_model_input(torch.zeros(1), state.timesteps[1])
    assert state.step_index == 1 and other.step_index is None
