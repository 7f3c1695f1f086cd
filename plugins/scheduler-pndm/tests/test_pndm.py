import subprocess
import sys

import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_pndm.multistep import adams_bashforth
from diffkit_scheduler_pndm.pndm import PNDMScheduler, pndm_timesteps


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registered_under_their_class_names():
    assert registry.get("scheduler", "PNDMScheduler") is PNDMScheduler
    assert registry.get("scheduler", "IPNDMScheduler").__module__ == "diffkit_scheduler_pndm.ipndm"


def test_plugin_entry_modules_do_not_import_torch():
    code = "import sys, diffkit_scheduler_pndm, diffkit_scheduler_pndm.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    assert PNDMScheduler().config.model_dump() == {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "skip_prk_steps": False,
        "set_alpha_to_one": False,
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }
    assert len(PNDMScheduler.compatibles_names) == 15 and "DDIMScheduler" in PNDMScheduler.compatibles_names
    assert PNDMScheduler().final_alpha_cumprod.item() == PNDMScheduler().alphas_cumprod[0].item()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prediction_type": "sample"}, r"prediction_type.*'epsilon' or 'v_prediction'"),
        ({"beta_schedule": "sigmoid"}, r"beta_schedule"),
        ({"timestep_spacing": "karras"}, r"timestep_spacing"),
        ({"num_train_timesteps": 3, "trained_betas": [0.1]}, r"trained_betas has 1 values but num_train_timesteps is 3"),
        ({"steps_offset": -1}, r"steps_offset"),
    ],
)
def test_invalid_configs_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PNDMScheduler(**kwargs)


def test_scheduler_is_immutable_and_swaps_from_compatible_configs():
    s = PNDMScheduler(skip_prk_steps=True)
    with pytest.raises(AttributeError, match="immutable"):
        s.alphas_cumprod = torch.ones(3)
    with pytest.raises(pydantic.ValidationError):
        s.config.skip_prk_steps = False
    ddim_like = {"beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}
    swapped = PNDMScheduler.from_config(ddim_like, skip_prk_steps=True)
    assert swapped.config.beta_schedule == "scaled_linear" and swapped.config.extras == {"clip_sample": False}


def test_run_layout():
    # leading, T=1000, n=10: base 0, 100, …, 900; PRK spans 900→600 with midpoints; PLMS walks 600 → 0
    prk, plms = pndm_timesteps(list(range(0, 1000, 100)), 1000, skip_prk_steps=False)
    assert prk == [900, 850, 850, 800, 800, 750, 750, 700, 700, 650, 650, 600]
    assert plms == [600, 500, 400, 300, 200, 100, 0]
    _, plms = pndm_timesteps(list(range(0, 1000, 100)), 1000, skip_prk_steps=True)
    assert plms == [900, 800, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert len(PNDMScheduler().plan(10).timesteps) == 19
    with pytest.raises(ValueError, match="num_inference_steps >= 4"):
        PNDMScheduler().plan(3)
    assert PNDMScheduler(skip_prk_steps=True).plan(1).timesteps.tolist() == [0]


@settings(max_examples=20, deadline=None)
@given(order=st.integers(1, 4), n=st.integers(-3, 9))
def test_adams_bashforth_integrates_polynomials_exactly(order, n):
    """With derivative samples f(n-order+1 … n) of a degree order-1 polynomial, the weights give
    the mean of f over [n, n+1]."""
    coeffs = torch.arange(1, order + 1, dtype=torch.float64)
    f = lambda k: sum(c * k**p for p, c in enumerate(coeffs.tolist()))  # noqa: E731
    history = [torch.full((2,), f(k), dtype=torch.float64) for k in range(n - order + 1, n + 1)]
    # mean of Σ c_p·k^p over [n, n+1] = Σ c_p·((n+1)^(p+1) - n^(p+1))/(p+1)
    mean = sum(c * ((n + 1) ** (p + 1) - n ** (p + 1)) / (p + 1) for p, c in enumerate(coeffs.tolist()))
    assert torch.allclose(adams_bashforth(history), torch.full((2,), mean, dtype=torch.float64))


@pytest.mark.parametrize(
    "cfg",
    [
        {"set_alpha_to_one": True},
        {"set_alpha_to_one": True, "skip_prk_steps": True, "timestep_spacing": "trailing"},
        {"set_alpha_to_one": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    ],
)
def test_a_model_that_knows_the_data_recovers_it(cfg):
    """PNDM's transfer is exact along x_t = √ᾱ_t·x0 + √(1-ᾱ_t)·ε, and every RK/multistep
    combination of one constant ε is ε: a perfect model lands on x0 at ᾱ = 1 (up to the float32
    rounding of the step coefficients)."""
    scheduler = PNDMScheduler(**cfg)
    ab = scheduler.alphas_cumprod.double()
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 4, 4, dtype=torch.float64)

    def model(x, t):
        return (x - ab[t].sqrt() * x0) / (1 - ab[t]).sqrt()

    state = scheduler.plan(10)  # an even stride: PRK's half steps land exactly on the midpoints it evaluates
    t0 = int(state.timesteps[0])
    x = ab[t0].sqrt() * x0 + (1 - ab[t0]).sqrt() * eps
    for t in state.timesteps:
        x = state.step(model(x, int(t)), t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_v_prediction_is_converted_to_noise_before_the_transfer():
    """ε = √ᾱ_t·v + √(1-ᾱ_t)·x; (the history keeps raw outputs, as diffusers does, so only a step
    without history is a pure conversion)."""
    eps_run = PNDMScheduler(skip_prk_steps=True).plan(5)
    v_run = PNDMScheduler(skip_prk_steps=True, prediction_type="v_prediction").plan(5)
    t = int(eps_run.timesteps[0])
    ab = PNDMScheduler().alphas_cumprod.double()[t]
    x, eps = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 2, 3, 3, dtype=torch.float64)
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0
    expected = eps_run.step(eps, t, x).prev_sample
    assert torch.allclose(v_run.step(v, t, x).prev_sample, expected, rtol=1e-6, atol=1e-6)


def test_states_are_independent_and_the_legacy_surface_works():
    scheduler = PNDMScheduler(skip_prk_steps=True)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.step(torch.zeros(1), 0, torch.zeros(1))
    scheduler.set_timesteps(5)
    other = scheduler.plan(5)
    x = torch.randn(1, 2, 3, 3)
    out = scheduler.step(x, scheduler.timesteps[0], x).prev_sample
    assert scheduler.counter == 1 and other.counter == 0 and other.ets == []
    assert torch.equal(other.step(x, other.timesteps[0], x).prev_sample, out)
    with pytest.raises(ValueError, match="warm-up"):
        PNDMScheduler().plan(6).step_plms(x, 900, x)
