"""diffkit plugin: the DPM-2 schedulers (no diffusers needed)."""

import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit_scheduler_kdpm2.kdpm2 import KDPM2DiscreteScheduler
from diffkit_scheduler_kdpm2.kdpm2_ancestral import KDPM2AncestralDiscreteScheduler

torch.set_num_threads(1)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def fake_model(x, t):
    return 0.3 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 70 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def test_registered_and_light_hooks():
    assert registry.get("scheduler", "KDPM2DiscreteScheduler") is KDPM2DiscreteScheduler
    assert registry.get("scheduler", "KDPM2AncestralDiscreteScheduler") is KDPM2AncestralDiscreteScheduler
    code = "import sys, diffkit_scheduler_kdpm2.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layout_and_midpoints():
    state = KDPM2DiscreteScheduler(**SD).plan(5)
    assert len(state.timesteps) == 9 and KDPM2DiscreteScheduler.order == 2
    sig, mid = state.sigmas.double(), state.sigmas_interpol.double()
    # the midpoint of the step σ_{k-1} → σ_k is their geometric mean
    assert torch.allclose(mid[1], (sig[0] * sig[1]).sqrt(), rtol=1e-5)
    assert torch.allclose(mid[3], (sig[2] * sig[3]).sqrt(), rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_dpm2_is_the_midpoint_method(prediction_type):
    state = KDPM2DiscreteScheduler(**SD, prediction_type=prediction_type).plan(6)
    x = torch.randn(1, 3, 4, 4) * state.init_noise_sigma

    def slope(xs, s, t):
        out = fake_model((xs / (s**2 + 1) ** 0.5).float(), t).double()
        x0 = {"epsilon": xs - s * out, "v_prediction": out * (-s / (s**2 + 1) ** 0.5) + xs / (s**2 + 1), "sample": out}
        return (xs - x0[prediction_type]) / s

    ref = x.double()
    sig = state.sigmas.tolist()[::2][:7]
    ts = state.timesteps.tolist()
    for k in range(6):
        s, s_next, t = sig[k], sig[k + 1] if k < 5 else 0.0, ts[2 * k]
        mid = (s * s_next) ** 0.5
        half = ref + (mid - s) * slope(ref, s, t)
        ref = half if s_next == 0 else ref + (s_next - s) * slope(half, mid, ts[2 * k + 1])
    for t in state.timesteps:
        x = state.step(fake_model(state.scale_model_input(x, t), t), t, x).prev_sample
    assert torch.allclose(x.double(), ref, rtol=1e-4, atol=1e-4)


def test_ancestral_noise_is_reproducible_and_only_in_second_stages():
    s = KDPM2AncestralDiscreteScheduler(**SD)
    x = torch.randn(1, 3, 4, 4)

    def run(seed):
        state, y, g = s.plan(5), x.clone(), torch.Generator().manual_seed(seed)
        draws = []
        for t in state.timesteps:
            before = g.get_state()
            y = state.step(fake_model(state.scale_model_input(y, t), t), t, y, generator=g).prev_sample
            draws.append(not torch.equal(before, g.get_state()))
        return y, draws

    a, draws = run(0)
    assert torch.equal(a, run(0)[0]) and not torch.equal(a, run(1)[0])
    assert draws == [False, True] * 4 + [False]
