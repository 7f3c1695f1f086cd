import math
import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_score_sde_ve.score_sde_ve import ScoreSdeVeScheduler


def test_registered_and_hooks_stay_light():
    assert registry.get("scheduler", "ScoreSdeVeScheduler") is ScoreSdeVeScheduler
    code = "import sys, diffkit_scheduler_score_sde_ve.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_and_invalid_configs():
    assert ScoreSdeVeScheduler().config.model_dump() == {
        "num_train_timesteps": 2000,
        "snr": 0.15,
        "sigma_min": 0.01,
        "sigma_max": 1348.0,
        "sampling_eps": 1e-5,
        "correct_steps": 1,
    }
    assert ScoreSdeVeScheduler().init_noise_sigma == 1348.0
    with pytest.raises(ConfigError, match=r"sigma_min \(5.0\) must be smaller than sigma_max \(1.0\)"):
        ScoreSdeVeScheduler(sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ConfigError, match="sampling_eps"):
        ScoreSdeVeScheduler(sampling_eps=0)
    with pytest.raises(ConfigError, match="correct_steps"):
        ScoreSdeVeScheduler(correct_steps=-1)


def test_schedule_tables():
    state = ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=100.0, sampling_eps=0.01).plan(5)
    t = state.timesteps.double()
    assert t[0].item() == 1.0 and math.isclose(t[-1].item(), 0.01, rel_tol=1e-6)
    # σ(t) = σ_min·(σ_max/σ_min)^t
    assert torch.allclose(state.sigmas.double(), 0.01 * 1e4**t, rtol=1e-5)
    ladder = state.discrete_sigmas.double()
    assert math.isclose(ladder[0].item(), 0.01, rel_tol=1e-6) and math.isclose(ladder[-1].item(), 100.0, rel_tol=1e-6)
    assert torch.allclose(ladder[1:] / ladder[:-1], torch.full((4,), 10.0, dtype=torch.float64), rtol=1e-5)


def test_predictor_follows_the_reverse_diffusion_formula():
    state = ScoreSdeVeScheduler(sigma_min=0.1, sigma_max=10.0).plan(4)
    ladder = state.discrete_sigmas.double()
    x, score = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for i, k in ((0, 3), (3, 0)):  # t = 1 is the top of the ladder, t = sampling_eps the bottom
        out = state.step_pred(score, state.timesteps[i], x, generator=torch.Generator().manual_seed(1))
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).double()
        g2 = ladder[k] ** 2 - (ladder[k - 1] ** 2 if k > 0 else 0.0)
        assert torch.allclose(out.prev_sample_mean.double(), x.double() + g2 * score.double(), rtol=1e-5, atol=1e-5)
        assert torch.allclose(out.prev_sample.double(), out.prev_sample_mean.double() + g2**0.5 * z, rtol=1e-5, atol=1e-5)


def test_corrector_step_size_follows_the_target_snr():
    state = ScoreSdeVeScheduler(snr=0.2).plan(3)
    x, score = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    out = state.step_correct(score, x, generator=torch.Generator().manual_seed(4)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4)).double()
    norm = lambda a: a.reshape(2, -1).norm(dim=-1).mean()  # noqa: E731
    eps = 2 * (0.2 * norm(z) / norm(score.double())) ** 2
    assert torch.allclose(out.double(), x.double() + eps * score.double() + (2 * eps) ** 0.5 * z, rtol=1e-5, atol=1e-5)


def test_states_are_independent_and_the_legacy_surface_keeps_sigmas_until_set_sigmas():
    scheduler = ScoreSdeVeScheduler(num_train_timesteps=50)
    assert len(scheduler.timesteps) == 50 and len(scheduler.discrete_sigmas) == 50
    state = scheduler.plan(7)
    scheduler.set_timesteps(3)
    assert len(scheduler.timesteps) == 3 and len(scheduler.sigmas) == 50 and len(state.timesteps) == 7
    scheduler.set_sigmas(3)
    assert len(scheduler.sigmas) == 3 and len(scheduler.discrete_sigmas) == 3
    with pytest.raises(NotImplementedError, match="step_pred.*step_correct"):
        state.step(torch.zeros(1), 0.5, torch.zeros(1))


def test_add_noise_uses_the_ladder():
    state = ScoreSdeVeScheduler(sigma_min=1.0, sigma_max=8.0).plan(4)
    x, z = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    noisy = state.add_noise(x, z, torch.tensor([0, 3]))
    assert torch.allclose(noisy[:, 0, 0, 0], torch.tensor([1.0, 8.0]))
