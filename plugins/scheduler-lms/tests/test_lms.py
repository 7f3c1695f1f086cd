"""diffkit plugin: the LMS scheduler (no diffusers needed)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from diffkit import registry
from diffkit_scheduler_lms.lms import LMSDiscreteScheduler, lms_coefficients

torch.set_num_threads(1)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def test_registered_and_light_hooks():
    assert registry.get("scheduler", "LMSDiscreteScheduler") is LMSDiscreteScheduler
    code = "import sys, diffkit_scheduler_lms.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_weights_integrate_polynomials_exactly(order):
    """A derivative that is a polynomial of degree < order in σ is integrated exactly over each step."""
    sigmas = np.array([14.6, 9.0, 5.5, 3.1, 1.7, 0.8, 0.3, 0.0])
    weights = lms_coefficients(sigmas, order)
    coeffs = np.random.default_rng(order).normal(size=order)
    poly = np.polynomial.Polynomial(coeffs)
    exact = poly.integ()
    for i in range(order - 1, len(sigmas) - 1):
        nodes = sigmas[i - np.arange(order)]
        approx = (weights[i] * poly(nodes)).sum()
        assert np.isclose(approx, exact(sigmas[i + 1]) - exact(sigmas[i]), rtol=1e-10, atol=1e-10)
    # the weights of one step add up to its length
    assert np.allclose(weights[order - 1 :].sum(axis=1), np.diff(sigmas)[order - 1 :])


def test_weights_agree_with_numerical_quadrature():
    scipy_integrate = pytest.importorskip("scipy.integrate")
    sigmas = LMSDiscreteScheduler(**SD).plan(12).sigmas.double().numpy()
    i, order = 7, 4
    weights = lms_coefficients(sigmas, order)[i]
    for j in range(order):
        others = [sigmas[i - m] for m in range(order) if m != j]

        def basis(tau, others=others, j=j):
            return np.prod([(tau - s) / (sigmas[i - j] - s) for s in others])

        assert np.isclose(weights[j], scipy_integrate.quad(basis, sigmas[i], sigmas[i + 1])[0], rtol=1e-9)


def test_history_and_order():
    state = LMSDiscreteScheduler(**SD).plan(8)
    x = torch.randn(1, 2, 3, 3)
    for k, t in enumerate(state.timesteps[:5]):
        x = state.step(torch.sin(x), t, state.scale_model_input(x, t), order=3).prev_sample
        assert len(state.derivatives) == min(k + 1, 3)


def test_first_step_is_an_euler_step():
    state = LMSDiscreteScheduler(**SD).plan(8)
    x = torch.randn(1, 2, 3, 3)
    t = state.timesteps[0]
    eps = torch.cos(x)
    state.scale_model_input(x, t)
    out = state.step(eps, t, x).prev_sample
    s, s_next = state.sigmas[0].item(), state.sigmas[1].item()
    assert torch.allclose(out, x + (s_next - s) * eps, atol=1e-5)
