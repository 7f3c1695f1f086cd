import math

import pytest
import torch

from diffkit.errors import ConfigError
from diffkit_scheduler_pndm.ipndm import IPNDMScheduler, ipndm_tables


def test_defaults_and_invalid_configs():
    assert IPNDMScheduler().config.model_dump() == {"num_train_timesteps": 1000, "trained_betas": None}
    assert IPNDMScheduler.compatibles_names == ()
    with pytest.raises(ConfigError, match="trained_betas"):
        IPNDMScheduler(trained_betas=[0.5])
    with pytest.raises(ConfigError, match=r"trained_betas.*\[0, 1\]"):
        IPNDMScheduler(trained_betas=[1.5, 0.0])
    with pytest.raises(ValueError, match="num_inference_steps >= 1"):
        IPNDMScheduler().plan(0)


def test_noise_path():
    sigmas, alphas = ipndm_tables(8)
    assert sigmas[0].item() == 1.0 and alphas[0].item() == 0.0 and sigmas[-1].item() == 0.0
    assert torch.allclose(sigmas**2 + alphas**2, torch.ones(9))
    state = IPNDMScheduler().plan(8)
    assert len(state.timesteps) == 8 and state.timesteps[0].item() == 1.0
    assert bool((state.timesteps[1:] < state.timesteps[:-1]).all())
    # t_i = atan2(σ_i, α_i)·2/π undoes σ_i = sin²(π/2·s_i) on this path: t_1 = 2/π·asin(sin²(π/2·7/8))
    assert math.isclose(state.timesteps[1].item(), 2 / math.pi * math.asin(math.sin(math.pi / 2 * 7 / 8) ** 2), rel_tol=1e-5)


def test_a_model_that_knows_the_data_recovers_it():
    """With a v-predicting model that knows x0, the derivative σ·x + α·v is the noise itself, so the
    multistep combination is exact along x = α·x0 + σ·ε and the run ends at x0."""
    sigma_path = [math.sin(s * math.pi / 2) ** 2 for s in torch.linspace(0.9, 0.0, 13).tolist()]
    scheduler = IPNDMScheduler(trained_betas=sigma_path)
    state = scheduler.plan(12)
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sigma, alpha = state.betas.double(), state.alphas.double()
    x = alpha[0] * x0 + sigma[0] * eps
    for i, t in enumerate(state.timesteps):
        eps_hat = (x - alpha[i] * x0) / sigma[i]
        x = state.step(alpha[i] * eps_hat - sigma[i] * x0, t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-5)


def test_the_first_step_divides_by_at_least_1e_8_and_runs_end():
    state = IPNDMScheduler().plan(3)
    x = torch.randn(1, 2, 8)
    out = state.step(torch.zeros_like(x), state.timesteps[0], x).prev_sample
    assert torch.isfinite(out).all()
    for t in state.timesteps[1:]:
        out = state.step(torch.zeros_like(x), t, out).prev_sample
    with pytest.raises(ValueError, match="is over"):
        state.step(torch.zeros_like(x), state.timesteps[-1], out)


def test_begin_index_and_first_step_lookup():
    state = IPNDMScheduler().plan(6)
    state.step(torch.zeros(1, 4), state.timesteps[2].clone(), torch.ones(1, 4))  # a copy: looked up by value
    assert state.step_index == 3
    other = IPNDMScheduler().plan(6)
    other.set_begin_index(4)
    other.step(torch.zeros(1, 4), 0.123, torch.ones(1, 4))
    assert other.step_index == 5
    with pytest.raises(ValueError, match="not one of this run's timesteps"):
        IPNDMScheduler().plan(6).step(torch.zeros(1, 4), 0.123, torch.ones(1, 4))


def test_trained_betas_fix_the_run_length(caplog):
    scheduler = IPNDMScheduler(trained_betas=[1.0, 0.5, 0.0])
    with caplog.at_level("WARNING", logger="diffkit.scheduler"):
        state = scheduler.plan(10)
    assert len(state.timesteps) == 2 and "fix the run to 2 steps" in caplog.text


def test_first_step_index_takes_the_second_of_repeated_values():
    from diffkit.schedules import first_step_index

    timesteps = torch.tensor([0.9, 0.5, 0.5, 0.1])
    host = timesteps.tolist()
    # by value, as diffusers looks it up; a view of the run's timesteps only spares the device read
    assert first_step_index(timesteps[1], timesteps, host) == 2
    assert first_step_index(torch.tensor(0.5), timesteps, host) == 2
    assert first_step_index(0.9, timesteps, host) == 0  # a Python number, compared in the timesteps' dtype
    assert first_step_index(0.1, timesteps, host) == 3
