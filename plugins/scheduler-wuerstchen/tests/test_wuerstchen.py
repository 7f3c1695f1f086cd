import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_wuerstchen.wuerstchen import DDPMWuerstchenScheduler as W

torch.set_num_threads(1)


def test_registered_light_hooks_and_defaults():
    assert registry.get("scheduler", "DDPMWuerstchenScheduler") is W
    subprocess.run([sys.executable, "-c", "import sys, diffkit_scheduler_wuerstchen.hooks; assert 'torch' not in sys.modules"], check=True)
    assert W().config.model_dump() == {"scaler": 1.0, "s": 0.008}
    with pytest.raises(ConfigError, match="scaler"):
        W(scaler=0)


def test_schedule_ends():
    s = W()
    ab = s.alpha_cumprod(torch.tensor([0.0, 1.0]))
    assert ab.tolist() == pytest.approx([0.9999, 0.0001])  # the clamp bounds
    assert s.plan(4).timesteps.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    with pytest.raises(ValueError, match="at least two times"):
        s.plan(timesteps=[0.5])
    with pytest.raises(ValueError, match="at least 1"):
        s.plan()


def test_last_step_adds_no_noise_and_the_end_is_final():
    state = W().plan(2)
    x = torch.randn(2, 3, 4, 4)
    t = state.timesteps[1].expand(2)
    a = state.step(x, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = state.step(x, t, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b)  # landing on t = 0 keeps the noise out
    with pytest.raises(ValueError, match="last of this run"):
        state.step(x, state.timesteps[2].expand(2), x)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        W().step(x, t, x)


def test_step_on_an_accelerator_reads_no_tensor_values():
    state = W().plan(3, device="meta")
    x = torch.empty(2, 3, 4, 4, device="meta", dtype=torch.float16)
    for t in state.timesteps[:-1]:
        x = state.step(torch.empty_like(x), t.expand(2), x).prev_sample
    assert x.device.type == "meta" and x.dtype == torch.float16 and state.step_index == 3
