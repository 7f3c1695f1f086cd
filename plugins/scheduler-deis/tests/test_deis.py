"""DEIS plugin: registration and the log-ρ coefficients (parity lives in tests/parity)."""

from __future__ import annotations

import torch

from diffkit import registry
from diffkit_scheduler_deis.deis import DEISMultistepScheduler, log_rho_coefficients

torch.set_num_threads(1)


def test_registered():
    assert registry.get("scheduler", "DEISMultistepScheduler") is DEISMultistepScheduler


def test_second_order_weights_integrate_a_constant_exactly():
    # for a constant ε the extrapolation weights sum to ρ_t - ρ_s0
    rho = [torch.tensor([0.5]), torch.tensor([0.8]), torch.tensor([1.3])]
    c1, c2 = log_rho_coefficients(2, rho)
    assert torch.allclose(c1 + c2, rho[0] - rho[1], atol=1e-6)


def test_dpmsolver_names_read_as_deis():
    s = DEISMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint")
    assert (s.config.algorithm_type, s.config.solver_type) == ("deis", "logrho")
