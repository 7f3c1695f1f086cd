import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_repaint.repaint import RePaintScheduler as RP
from diffkit_scheduler_repaint.repaint import resampling_schedule

torch.set_num_threads(1)


def test_registered_light_hooks_and_defaults():
    assert registry.get("scheduler", "RePaintScheduler") is RP
    subprocess.run([sys.executable, "-c", "import sys, diffkit_scheduler_repaint.hooks; assert 'torch' not in sys.modules"], check=True)
    assert RP().config.model_dump() == {
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "eta": 0.0, "trained_betas": None, "clip_sample": True,
    }
    with pytest.raises(ConfigError, match="eta"):
        RP(eta=2.0)


def test_resampling_schedule():
    assert resampling_schedule(4, 10, 10) == [3, 2, 1, 0]
    # at 2 and at 0 the run goes back up two steps, once each
    assert resampling_schedule(5, 2, 2) == [4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
    assert RP(num_train_timesteps=10).plan(20, 2, 1).timesteps.tolist() == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="jump_length"):
        RP().plan(10, 0, 1)


def test_mask_keeps_the_known_region():
    state = RP(num_train_timesteps=50).plan(5, 2, 2)
    original = torch.full((1, 3, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    last = int(state.timesteps[0]) + 1
    for t in state.timesteps:
        if int(t) < last:
            x = state.step(torch.zeros_like(x), t, x, original, mask, torch.Generator().manual_seed(int(t))).prev_sample
        else:
            x = state.undo_step(x, last, torch.Generator().manual_seed(1))
        last = int(t)
    assert torch.allclose(x[..., :2], original[..., :2], atol=0.05)  # t = 0 reproduces the original up to √(1-ᾱ_0)·z


def test_eta_on_the_legacy_surface_and_per_call():
    s = RP()
    s.eta = 0.5
    assert s.eta == 0.5 and s.config.eta == 0.0
    s.set_timesteps(10)
    assert s._state().eta == 0.5
    with pytest.raises(ValueError, match="eta"):
        s.eta = 3
    with pytest.raises(AttributeError, match="immutable"):
        s.betas = None
    assert RP().plan(10, eta=1.0).eta == 1.0


def test_step_on_an_accelerator_reads_no_tensor_values():
    state = RP(eta=0.5).plan(4, 2, 2, device="meta")
    x = torch.empty(1, 3, 4, 4, device="meta")
    original, mask = torch.empty_like(x), torch.empty(1, 1, 4, 4, device="meta")
    values = state.timestep_values
    last = values[0] + 1
    for t, value in zip(state.timesteps, values, strict=True):
        x = state.step(torch.empty_like(x), t, x, original, mask).prev_sample if value < last else state.undo_step(x, last)
        last = value
    assert x.device.type == "meta"
