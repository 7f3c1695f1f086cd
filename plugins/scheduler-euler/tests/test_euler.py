"""diffkit plugin: the Euler schedulers and the shared sigma maths (no diffusers needed)."""

import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit import sigmas as K
from diffkit.errors import ConfigError
from diffkit_scheduler_euler.edm_euler import EDMEulerScheduler
from diffkit_scheduler_euler.euler import EulerDiscreteScheduler
from diffkit_scheduler_euler.euler_ancestral import EulerAncestralDiscreteScheduler, ancestral_sigmas

torch.set_num_threads(1)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def fake_model(x, t):
    return 0.3 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 70 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def sample(state, x, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    for t in state.timesteps:
        x = state.step(fake_model(state.scale_model_input(x, t), t), t, x, generator=g, **kwargs).prev_sample
    return x


def test_registered_under_their_class_names():
    assert registry.get("scheduler", "EulerDiscreteScheduler") is EulerDiscreteScheduler
    assert registry.get("scheduler", "EulerAncestralDiscreteScheduler") is EulerAncestralDiscreteScheduler
    assert registry.get("scheduler", "EDMEulerScheduler") is EDMEulerScheduler


def test_hook_module_does_not_import_torch():
    code = "import sys, diffkit_scheduler_euler.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the shared sigma maths ------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(lo=st.floats(0.001, 1.0), ratio=st.floats(1.5, 1e4), n=st.integers(2, 200))
def test_schedules_run_from_sigma_max_to_sigma_min(lo, ratio, n):
    hi = lo * ratio
    for sig in (K.karras_sigmas(lo, hi, n), K.exponential_sigmas(lo, hi, n), K.beta_sigmas(lo, hi, n)):
        assert len(sig) == n and np.isclose(sig[0], hi) and np.isclose(sig[-1], lo)
        assert (np.diff(sig) < 0).all()
    # Karras: σ^(1/ρ) is evenly spaced
    assert np.allclose(np.diff(K.karras_sigmas(lo, hi, n) ** (1 / 7)), ((lo ** (1 / 7)) - hi ** (1 / 7)) / (n - 1))


def test_sigma_to_t_inverts_the_table():
    s = EulerDiscreteScheduler(**SD)
    table = s._sigma_table
    t = np.array([0.0, 1.0, 17.0, 500.0, 998.0, 999.0])
    assert np.allclose(K.sigma_to_t(K.sigmas_at(t, table), s._log_sigmas), t, atol=1e-4)
    # between table entries σ is interpolated linearly, t back in log σ: close, not equal
    half = t[1:-1] + 0.5
    assert np.allclose(K.sigma_to_t(K.sigmas_at(half, table), s._log_sigmas), half, atol=0.05)
    # outside the table it clamps
    assert K.sigma_to_t(np.array([1e-6, 1e6]), s._log_sigmas).tolist() == [0.0, 999.0]


def test_float_timesteps():
    assert K.float_timesteps("leading", 1000, 10, 1).tolist() == list(range(901, 0, -100))
    assert K.float_timesteps("trailing", 1000, 10).tolist() == list(range(999, 0, -100))
    lin = K.float_timesteps("linspace", 1000, 4)
    assert lin.dtype == np.float32 and lin.tolist() == [999.0, 666.0, 333.0, 0.0]
    assert len(K.float_timesteps("trailing", 1000, 61)) == 61
    with pytest.raises(ValueError, match="at least 1"):
        K.float_timesteps("linspace", 1000, 0)


# -- Euler -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_euler_step_is_the_euler_formula(prediction_type):
    s = EulerDiscreteScheduler(**SD, prediction_type=prediction_type)
    state = s.plan(10)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64).float() * 5
    for i, t in enumerate(state.timesteps):
        out = fake_model(state.scale_model_input(x, t), t)
        sigma, nxt = state.sigmas[i].double(), state.sigmas[i + 1].double()
        xd, od = x.double(), out.double()
        x0 = {
            "epsilon": xd - sigma * od,
            "v_prediction": od * (-sigma / (sigma**2 + 1) ** 0.5) + xd / (sigma**2 + 1),
            "sample": od,
        }[prediction_type]
        expected = xd + (xd - x0) / sigma * (nxt - sigma)
        step = state.step(out, t, x)
        assert torch.allclose(step.prev_sample.double(), expected, rtol=1e-5, atol=1e-5 * float(xd.abs().max()))
        x = step.prev_sample


def test_init_noise_sigma_and_input_scaling():
    linspace = EulerDiscreteScheduler(**SD).plan(20)
    leading = EulerDiscreteScheduler(**SD, timestep_spacing="leading", steps_offset=1).plan(20)
    top = float(linspace.sigmas.max())
    assert linspace.init_noise_sigma == pytest.approx(top)
    assert leading.init_noise_sigma == pytest.approx((float(leading.sigmas.max()) ** 2 + 1) ** 0.5)
    x = torch.ones(1, 1, 2, 2)
    t = linspace.timesteps[0]
    assert torch.allclose(linspace.scale_model_input(x, t), x / (top**2 + 1) ** 0.5)


def test_zero_snr_keeps_sigma_max_finite():
    s = EulerDiscreteScheduler(**SD, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    assert float(s.alphas_cumprod[-1]) == 2.0**-24
    state = s.plan(10)
    assert torch.isfinite(state.sigmas).all() and float(state.sigmas[0]) == pytest.approx(4096, rel=1e-3)


def test_churn_adds_noise_only_inside_the_window():
    s = EulerDiscreteScheduler(**SD)
    x = torch.randn(1, 3, 4, 4)
    a = sample(s.plan(6), x, s_churn=1.0)
    b = sample(s.plan(6), x, s_churn=1.0)
    c = sample(s.plan(6), x)
    d = sample(s.plan(6), x, s_churn=1.0, s_tmin=1e6)
    assert torch.equal(a, b) and not torch.allclose(a, c) and torch.equal(c, d)


def test_runs_are_independent_and_thread_safe():
    s = EulerAncestralDiscreteScheduler(**SD)
    x = torch.randn(1, 3, 4, 4)
    expected = [sample(s.plan(n), x, seed=n) for n in (5, 9, 13)]
    results = {}

    def work(n):
        results[n] = sample(s.plan(n), x, seed=n)

    threads = [threading.Thread(target=work, args=(n,)) for n in (5, 9, 13)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(torch.equal(results[n], e) for n, e in zip((5, 9, 13), expected, strict=True))


def test_schedulers_are_immutable():
    s = EulerDiscreteScheduler()
    with pytest.raises(AttributeError, match="immutable"):
        s.betas = None


def test_invalid_combinations_name_the_fields():
    with pytest.raises(ConfigError, match="use_karras_sigmas.*use_exponential_sigmas"):
        EulerDiscreteScheduler(use_karras_sigmas=True, use_exponential_sigmas=True)
    with pytest.raises(ConfigError, match="sigma_min.*sigma_max"):
        EulerDiscreteScheduler(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ConfigError, match="final_sigmas_type"):
        EulerDiscreteScheduler(final_sigmas_type="last")
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        EulerDiscreteScheduler(use_karras_sigmas=True).plan(timesteps=[900, 100])
    with pytest.raises(ValueError, match="exactly one"):
        EulerDiscreteScheduler().plan(10, sigmas=[1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas must be positive"):
        EulerDiscreteScheduler().plan(sigmas=[1.0, -1.0, 0.0])


# -- Euler ancestral ---------------------------------------------------------------------------
def test_ancestral_split_preserves_the_variance():
    sig_from = torch.tensor([14.6, 3.0, 0.5, 2.0e4])
    sig_to = torch.tensor([7.0, 1.0, 0.0, 1.75])
    up, down = ancestral_sigmas(sig_from, sig_to)
    # σ_down² + σ_up² = σ_to², and σ_down = σ_to²/σ_from
    assert torch.allclose(up**2 + down**2, sig_to**2, rtol=1e-4) and torch.isfinite(down).all()
    assert torch.allclose(down[:3], sig_to[:3] ** 2 / sig_from[:3], rtol=1e-4)
    # σ_to ≪ σ_from: √(σ_to² - σ_up²) keeps one float32 rounding of σ_up² (≈ 7e-4 on some CPUs, 0 elsewhere)
    assert 0 <= float(down[3]) <= (2 * torch.finfo(torch.float32).eps * float(sig_to[3]) ** 2) ** 0.5


def test_ancestral_draws_reproducible_noise():
    s = EulerAncestralDiscreteScheduler(**SD)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(sample(s.plan(8), x, seed=3), sample(s.plan(8), x, seed=3))
    assert not torch.equal(sample(s.plan(8), x, seed=3), sample(s.plan(8), x, seed=4))


# -- EDM ---------------------------------------------------------------------------------------
def test_edm_preconditioning():
    s = EDMEulerScheduler()
    state = s.plan(10)
    assert float(state.sigmas[0]) == pytest.approx(80.0) and float(state.sigmas[-2]) == pytest.approx(0.002)
    assert torch.allclose(state.timesteps, 0.25 * state.sigmas[:-1].log())
    assert state.init_noise_sigma == pytest.approx((80.0**2 + 1) ** 0.5)
    x, f = torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3)
    t = state.timesteps[3]
    sigma = float(state.sigmas[3])
    assert torch.allclose(state.scale_model_input(x, t), x / (sigma**2 + 0.25) ** 0.5)
    d = 0.25 / (sigma**2 + 0.25) * x + sigma * 0.5 / (sigma**2 + 0.25) ** 0.5 * f
    out = state.step(f, t, x)
    assert torch.allclose(out.pred_original_sample, d, atol=1e-5)
    nxt = float(state.sigmas[4])
    assert torch.allclose(out.prev_sample, x + (x - d) / sigma * (nxt - sigma), atol=1e-4)


def test_steps_read_nothing_back_from_the_device():
    """No ``.item()``/``tolist()`` (a device sync) and no tensors built from Python values inside a step."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    from diffkit import registry as reg

    names = [
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "EDMEulerScheduler",
        "HeunDiscreteScheduler",
        "LMSDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
    ]
    for name in (n for n in names if reg.has("scheduler", n)):
        for prediction_type in ("epsilon", "v_prediction"):
            state = reg.get("scheduler", name)(prediction_type=prediction_type, num_train_timesteps=100).plan(4)
            x, g = torch.randn(1, 2, 3, 3), torch.Generator().manual_seed(0)
            for t in state.timesteps:
                with Recorder() as rec:
                    y = state.scale_model_input(x, t)
                    x = state.step(torch.sin(y), t, x, generator=g).prev_sample
                bad = [
                    op for op in rec.ops if "_local_scalar_dense" in op or "lift_fresh" in op or "scalar_tensor" in op
                ]
                assert not bad, (name, bad)
