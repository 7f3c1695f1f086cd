"""diffkit plugin: the Heun scheduler (no diffusers needed)."""

import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit_scheduler_heun.heun import HeunDiscreteScheduler

torch.set_num_threads(1)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


def fake_model(x, t):
    return 0.3 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 70 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def test_registered_and_light_hooks():
    assert registry.get("scheduler", "HeunDiscreteScheduler") is HeunDiscreteScheduler
    code = "import sys, diffkit_scheduler_heun.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    cfg = HeunDiscreteScheduler().config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule, cfg.timestep_spacing) == (
        0.00085,
        0.012,
        "linear",
        "linspace",
    )
    assert HeunDiscreteScheduler.order == 2


def test_interleaved_layout():
    state = HeunDiscreteScheduler(**SD).plan(4)
    t, s = state.timesteps.tolist(), state.sigmas.tolist()
    assert len(t) == 7 and t[1] == t[2] and t[3] == t[4] and t[5] == t[6]
    assert len(s) == 8 and s[1] == s[2] and s[-1] == 0.0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_heun_is_karras_algorithm_1(prediction_type):
    """Each pair of calls is one Heun step: Euler predictor, then the mean of both slopes from the start."""
    state = HeunDiscreteScheduler(**SD, prediction_type=prediction_type).plan(6)
    x = torch.randn(1, 3, 4, 4) * state.init_noise_sigma

    def slope(xs, s, t):
        out = fake_model((xs / (s**2 + 1) ** 0.5).float(), t).double()
        x0 = {"epsilon": xs - s * out, "v_prediction": out * (-s / (s**2 + 1) ** 0.5) + xs / (s**2 + 1), "sample": out}
        return (xs - x0[prediction_type]) / s

    ref = x.double()
    sig = sorted(set(state.sigmas.tolist()), reverse=True)
    steps = sorted(set(state.timesteps.tolist()), reverse=True)
    for s, s_next, t, t_next in zip(sig[:-1], sig[1:], steps, [*steps[1:], None], strict=True):
        d = slope(ref, s, t)
        pred = ref + (s_next - s) * d
        ref = pred if s_next == 0 else ref + (s_next - s) * (d + slope(pred, s_next, t_next)) / 2
    for t in state.timesteps:
        x = state.step(fake_model(state.scale_model_input(x, t), t), t, x).prev_sample
    assert torch.allclose(x.double(), ref, rtol=1e-4, atol=1e-4)


def test_stage_is_tracked_per_run():
    s = HeunDiscreteScheduler(**SD)
    a, b = s.plan(5), s.plan(5)
    x = torch.randn(1, 3, 4, 4)
    t = a.timesteps[0]
    a.step(fake_model(x, t), t, x)
    assert not a.state_in_first_order and b.state_in_first_order


def test_clip_sample_clamps_x0():
    state = HeunDiscreteScheduler(**SD, prediction_type="sample", clip_sample=True, clip_sample_range=0.5).plan(3)
    x = torch.randn(1, 3, 4, 4)
    t = state.timesteps[0]
    out = state.step(torch.full_like(x, 3.0), t, x)
    assert float(out.pred_original_sample.max()) == 0.5
