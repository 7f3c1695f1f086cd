import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_ddim.ddim import DDIMScheduler
from diffkit_scheduler_ddim.ddim_inverse import DDIMInverseScheduler

torch.set_num_threads(1)


def fake_model(x, t):
    return 0.3 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 70)


def test_registered_with_diffusers_defaults():
    assert registry.get("scheduler", "DDIMInverseScheduler") is DDIMInverseScheduler
    assert DDIMInverseScheduler().config.model_dump() == {
        "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "trained_betas": None, "clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0,
        "prediction_type": "epsilon", "clip_sample_range": 1.0, "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [({"timestep_spacing": "linspace"}, "timestep_spacing"), ({"steps_offset": 1000}, "steps_offset")],
)
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DDIMInverseScheduler(**kwargs)


def test_timesteps_ascend_and_plan_errors():
    s = DDIMInverseScheduler(steps_offset=1)
    assert s.plan(4).timesteps.tolist() == [1, 251, 501, 751]
    assert DDIMInverseScheduler(timestep_spacing="trailing").plan(61).timesteps[0] >= 0
    with pytest.raises(ValueError, match="between 1 and"):
        s.plan(1001)
    with pytest.raises(ValueError, match="past num_train_timesteps"):
        DDIMInverseScheduler(steps_offset=999).plan(2)


def test_inversion_is_ddim_run_backwards():
    """With ε independent of x and no clipping, inverting then sampling returns the start."""
    cfg = {"clip_sample": False, "set_alpha_to_one": False, "beta_schedule": "scaled_linear"}
    inverse, forward = DDIMInverseScheduler(**cfg).plan(10), DDIMScheduler(**cfg).plan(10)
    x0 = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    x = x0
    for t in inverse.timesteps:
        x = inverse.step(eps, t, x).prev_sample
    for t in forward.timesteps:
        x = forward.step(eps, t, x).prev_sample
    assert torch.allclose(x, x0, atol=1e-4)


def test_legacy_surface_and_accelerator():
    s = DDIMInverseScheduler()
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(x, 0, x)
    s.set_timesteps(5)
    prev, x0 = s.step(fake_model(x, 0), s.timesteps[0], x, False)  # diffusers' positional return_dict
    assert prev.shape == x0.shape == x.shape
    state = DDIMInverseScheduler(prediction_type="v_prediction").plan(3, device="meta")
    y = torch.empty(1, 2, 4, 4, device="meta")
    for t in state.timesteps:
        y = state.step(torch.empty(1, 2, 4, 4, device="meta"), t, y).prev_sample
    assert y.device.type == "meta" and state.step_index == 3
