import subprocess
import sys

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_vq_diffusion.vq_diffusion import VQDiffusionScheduler as VQ

torch.set_num_threads(1)


def test_registered_light_hooks_and_required_classes():
    assert registry.get("scheduler", "VQDiffusionScheduler") is VQ
    subprocess.run([sys.executable, "-c", "import sys, diffkit_scheduler_vq_diffusion.hooks; assert 'torch' not in sys.modules"], check=True)
    with pytest.raises(ConfigError, match="num_vec_classes"):
        VQ()
    assert VQ(num_vec_classes=10).config.model_dump() == {
        "num_vec_classes": 10, "num_train_timesteps": 100, "alpha_cum_start": 0.99999, "alpha_cum_end": 0.000009,
        "gamma_cum_start": 0.000009, "gamma_cum_end": 0.99999,
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_vec_classes": 1}, "num_vec_classes"), ({"num_train_timesteps": 1}, "num_train_timesteps"),
     ({"alpha_cum_end": 0.5, "gamma_cum_end": 0.9}, r"alpha_cum_end \+ gamma_cum_end")],
)
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VQ(**{"num_vec_classes": 5, **kwargs})


def test_transition_probabilities_sum_to_one():
    s = VQ(num_vec_classes=6)
    for prefix in ("log_", "log_cumprod_"):
        a, b, c = (getattr(s, f"{prefix}{k}").double().exp() for k in ("at", "bt", "ct"))
        # keep + move to any of the K-1 others + mask = 1
        assert torch.allclose(a + 5 * b + c, torch.ones_like(a), atol=1e-5)


def test_sampling_unmasks_and_keeps_shapes():
    state = VQ(num_vec_classes=4, num_train_timesteps=10).plan(10)
    g = torch.Generator().manual_seed(0)
    x = torch.full((2, 8), 3)
    for t in state.timesteps:
        log_p = torch.log_softmax(torch.randn(2, 3, 8, generator=g), dim=1)
        x = state.step(log_p, t, x, generator=g).prev_sample
    assert x.dtype == torch.int64 and x.shape == (2, 8) and bool((x < 3).all())
    with pytest.raises(ValueError, match=r"\[1, num_train_timesteps=10\]"):
        VQ(num_vec_classes=4, num_train_timesteps=10).plan(11)
