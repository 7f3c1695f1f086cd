import math
import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_karras_ve.karras_ve import MAX_CHURN, KarrasVeScheduler


def test_registered_and_hooks_stay_light():
    assert registry.get("scheduler", "KarrasVeScheduler") is KarrasVeScheduler
    code = "import sys, diffkit_scheduler_karras_ve.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_and_invalid_configs():
    assert KarrasVeScheduler().config.model_dump() == {
        "sigma_min": 0.02,
        "sigma_max": 100.0,
        "s_noise": 1.007,
        "s_churn": 80.0,
        "s_min": 0.05,
        "s_max": 50.0,
    }
    assert KarrasVeScheduler.order == 2 and KarrasVeScheduler().init_noise_sigma == 100.0
    with pytest.raises(ConfigError, match=r"sigma_min \(2.0\) must be smaller than sigma_max \(1.0\)"):
        KarrasVeScheduler(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ConfigError, match="s_churn"):
        KarrasVeScheduler(s_churn=-1)
    with pytest.raises(ValueError, match="num_inference_steps >= 2"):
        KarrasVeScheduler().plan(1)
    with pytest.raises(NotImplementedError):
        KarrasVeScheduler().add_noise(torch.zeros(1), torch.zeros(1), torch.zeros(1))


def test_schedule_is_the_variance_ladder_used_as_sigma():
    """The documented quirk: levels run from σ_max² down to σ_min²."""
    state = KarrasVeScheduler(sigma_min=0.5, sigma_max=4.0).plan(4)
    assert state.timesteps.tolist() == [3, 2, 1, 0]
    expected = [16.0 * (0.25 / 16.0) ** (i / 3) for i in (3, 2, 1, 0)]  # schedule[j] is level i = 3 - j
    assert torch.allclose(state.schedule.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6)
    assert math.isclose(state.levels(3)[0].item(), 16.0, rel_tol=1e-6) and state.levels(0)[1] == 0


@pytest.mark.parametrize("sigma, churned", [(1.0, True), (0.01, False), (60.0, False)])
def test_churn_only_inside_s_min_s_max(sigma, churned):
    state = KarrasVeScheduler(s_churn=2.0).plan(10)
    x = torch.zeros(1, 3, 4, 4)
    gamma = min(2.0 / 10, MAX_CHURN) if churned else 0.0
    for level in (sigma, torch.tensor(sigma)):
        x_hat, sigma_hat = state.add_noise_to_input(x, level, generator=torch.Generator().manual_seed(0))
        assert math.isclose(float(sigma_hat), sigma * (1 + gamma), rel_tol=1e-6)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        expected = ((sigma * (1 + gamma)) ** 2 - sigma**2) ** 0.5 * 1.007 * z
        assert torch.allclose(x_hat, expected, rtol=1e-5, atol=1e-6)


def test_euler_and_heun_steps_are_exact_for_a_perfect_denoiser():
    """With D(x, σ) = (x0 - x)/σ the ODE path x = x0 + σ·n is followed exactly."""
    scheduler = KarrasVeScheduler()
    x0, n = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sigma_hat, sigma_prev = 5.0, 2.0
    x_hat = x0 + sigma_hat * n
    euler = scheduler.step((x0 - x_hat) / sigma_hat, sigma_hat, sigma_prev, x_hat)
    assert torch.allclose(euler.prev_sample, x0 + sigma_prev * n) and torch.allclose(euler.pred_original_sample, x0)
    heun = scheduler.step_correct(
        (x0 - euler.prev_sample) / sigma_prev, sigma_hat, sigma_prev, x_hat, euler.prev_sample, euler.derivative
    )
    assert torch.allclose(heun.prev_sample, x0 + sigma_prev * n)
    prev, derivative = scheduler.step((x0 - x_hat) / sigma_hat, sigma_hat, 0, x_hat, return_dict=False)
    assert torch.allclose(prev, x0) and torch.allclose(derivative, n)


def test_states_are_independent():
    scheduler = KarrasVeScheduler()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.schedule  # noqa: B018
    first, second = scheduler.plan(3), scheduler.plan(6)
    assert len(first.schedule) == 3 and len(second.schedule) == 6
    scheduler.set_timesteps(4)
    assert len(scheduler.schedule) == 4 and scheduler.num_inference_steps == 4
