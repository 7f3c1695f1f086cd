"""DPM-Solver plugin: registration, per-call states, config checks (parity lives in tests/parity)."""

from __future__ import annotations

import pytest
import torch

from diffkit import registry
from diffkit_scheduler_dpmsolver.multistep import DPMSolverMultistepScheduler
from diffkit_scheduler_dpmsolver.singlestep import order_list
from diffkit_scheduler_dpmsolver.solver import combine

torch.set_num_threads(1)
NAMES = [
    "DPMSolverMultistepScheduler",
    "DPMSolverMultistepInverseScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "EDMDPMSolverMultistepScheduler",
]


@pytest.mark.parametrize("name", NAMES)
def test_registered(name):
    cls = registry.get("scheduler", name)
    assert cls.__name__ == name and cls.config_class.owner_name == name


def test_interleaved_runs_do_not_share_state():
    scheduler = DPMSolverMultistepScheduler(solver_order=3)
    a, b = scheduler.plan(10), scheduler.plan(10)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    xa, xb = x.clone(), x.clone()
    for t in a.timesteps:
        xa = a.step(0.1 * xa, t, xa).prev_sample
        xb = b.step(0.1 * xb, t, xb).prev_sample
    alone = scheduler.plan(10)
    for t in alone.timesteps:
        x = alone.step(0.1 * x, t, x).prev_sample
    assert torch.equal(xa, x) and torch.equal(xb, x)


def test_scheduler_is_immutable():
    with pytest.raises(AttributeError, match="immutable"):
        DPMSolverMultistepScheduler().alphas_cumprod = torch.ones(3)


@pytest.mark.parametrize(
    "n, order, lower, zero, expected",
    [(6, 2, True, False, [1, 2, 1, 2, 1, 1]), (7, 3, True, True, [1, 2, 3, 1, 2, 3, 1]), (6, 3, False, False, [1, 2, 3] * 2)],
)
def test_order_list(n, order, lower, zero, expected):
    assert order_list(n, order, lower, zero) == expected


def test_combine_rounds_each_product():
    x, y = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    assert torch.equal(combine(x, 0.5, [(2.0, y)]), 0.5 * x + 2.0 * y)
