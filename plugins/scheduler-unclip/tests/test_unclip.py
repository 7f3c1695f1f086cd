import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_unclip.unclip import UnCLIPScheduler as U

torch.set_num_threads(1)


def test_registered_light_hooks_and_defaults():
    assert registry.get("scheduler", "UnCLIPScheduler") is U
    subprocess.run([sys.executable, "-c", "import sys, diffkit_scheduler_unclip.hooks; assert 'torch' not in sys.modules"], check=True)
    assert U().config.model_dump() == {
        "num_train_timesteps": 1000, "variance_type": "fixed_small_log", "clip_sample": True,
        "clip_sample_range": 1.0, "prediction_type": "epsilon", "beta_schedule": "squaredcos_cap_v2",
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [({"beta_schedule": "linear"}, "beta_schedule"), ({"prediction_type": "v_prediction"}, "prediction_type"),
     ({"variance_type": "fixed_small"}, "variance_type"), ({"num_train_timesteps": 1}, "num_train_timesteps")],
)
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        U(**kwargs)


def test_timesteps_and_errors():
    assert U().plan(5).timesteps.tolist() == [999, 749, 500, 250, 0]
    with pytest.raises(ValueError, match="2 <= num_inference_steps"):
        U().plan(1)
    state = U(variance_type="learned_range").plan(3)
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="twice the sample's"):
        state.step(x, state.timesteps[0], x)
    out = state.step(x, state.timesteps[-1], x)  # t = 0 draws nothing, so needs no variance channels
    assert out.prev_sample.shape == x.shape


def test_step_to_the_next_listed_timestep_on_an_accelerator():
    state = U().plan(4, device="meta")
    x = torch.empty(1, 2, 4, 4, device="meta")
    for i, t in enumerate(state.timesteps):
        prev = state.timesteps[i + 1] if i + 1 < 4 else None
        x = state.step(torch.empty_like(x), t, x, prev_timestep=prev).prev_sample
    assert x.device.type == "meta"
