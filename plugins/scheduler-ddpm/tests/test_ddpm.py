import json
import subprocess
import sys

import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry, schedules
from diffkit.errors import ConfigError
from diffkit.outputs import SchedulerOutput
from diffkit_scheduler_ddpm.ddpm import DDPMConfig, DDPMScheduler


def fake_model(x, t):
    return 0.3 * x + torch.sin(torch.as_tensor(t, dtype=x.dtype) / 50 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def run(state, x, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    for t in state.timesteps:
        x = state.step(fake_model(x, t), t, x, generator=g, **kwargs).prev_sample
    return x


def test_registered_under_its_class_name():
    assert registry.get("scheduler", "DDPMScheduler") is DDPMScheduler


def test_plugin_entry_modules_do_not_import_torch():
    code = "import sys, diffkit_scheduler_ddpm, diffkit_scheduler_ddpm.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    assert DDPMScheduler().config.model_dump() == {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "variance_type": "fixed_small",
        "clip_sample": True,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "rescale_betas_zero_snr": False,
    }
    assert "DDIMScheduler" in DDPMScheduler.compatibles_names and len(DDPMScheduler.compatibles_names) == 15


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"beta_schedule": "cosine"},
            r"beta_schedule.*'linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid' or 'laplace'",
        ),
        ({"prediction_type": "x0"}, r"prediction_type.*'epsilon', 'sample' or 'v_prediction'"),
        ({"variance_type": "fixed"}, r"variance_type.*'learned_range'"),
        ({"timestep_spacing": "even"}, r"timestep_spacing.*'leading', 'trailing' or 'linspace'"),
        ({"trained_betas": [0.1, 0.2]}, r"trained_betas has 2 values but num_train_timesteps is 1000"),
        ({"steps_offset": 1000}, r"steps_offset \(1000\) must be smaller than num_train_timesteps"),
        ({"dynamic_thresholding_ratio": 1.5}, r"dynamic_thresholding_ratio"),
    ],
)
def test_invalid_configs_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DDPMScheduler(**kwargs)


def test_trained_betas_accept_arrays_and_win():
    betas = torch.linspace(0.001, 0.01, 20)
    s = DDPMScheduler(num_train_timesteps=20, trained_betas=betas.numpy(), beta_schedule="scaled_linear")
    assert s.config.trained_betas == tuple(betas.tolist())
    assert torch.equal(s.betas, betas)


def test_tables():
    s = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.equal(s.betas, schedules.scaled_linear_betas(0.00085, 0.012, 1000))
    assert torch.equal(s.alphas, 1 - s.betas)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(s.alphas, 0))
    zsnr = DDPMScheduler(rescale_betas_zero_snr=True)
    assert zsnr.alphas_cumprod[-1].item() == 0.0
    assert len(s) == 1000


def test_scheduler_is_immutable():
    s = DDPMScheduler()
    with pytest.raises(AttributeError, match="immutable"):
        s.betas = torch.zeros(3)
    with pytest.raises(AttributeError):
        s.config = DDPMConfig()
    with pytest.raises(pydantic.ValidationError):
        s.config.beta_start = 0.5
    s.set_timesteps(10)  # the legacy surface does not count as mutation of config or tables
    assert s.config.beta_start == 0.0001


def test_plan_spacing_and_validation():
    s = DDPMScheduler(steps_offset=1)
    assert s.plan(10).timesteps.tolist() == list(range(901, 0, -100))
    assert s.plan().timesteps.tolist() == list(range(999, -1, -1))
    assert s.plan(timesteps=[900, 10, 3]).timesteps.tolist() == [900, 10, 3]
    assert s.plan(timesteps=[900, 10]).num_inference_steps == 2
    with pytest.raises(ValueError, match="not both"):
        s.plan(10, timesteps=[5, 1])
    with pytest.raises(ValueError, match="descending"):
        s.plan(timesteps=[1, 5])
    with pytest.raises(ValueError, match=r"\[0, num_train_timesteps=1000\)"):
        s.plan(timesteps=[1000, 5])
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps"):
        s.plan(1001)
    with pytest.raises(ValueError, match="steps_offset=1"):
        s.plan(1000)
    assert s.plan(10, device="cpu").timesteps.device.type == "cpu"


def test_previous_timestep_follows_the_listed_timesteps():
    state = DDPMScheduler(timestep_spacing="trailing").plan(7)
    ts = state.timesteps.tolist()
    assert [state.previous_timestep(t) for t in ts] == ts[1:] + [-1]
    assert DDPMScheduler().previous_timestep(500) == 499
    with pytest.raises(ValueError, match="not one of this run's timesteps"):
        state.step(torch.zeros(1, 1, 2, 2), 5, torch.zeros(1, 1, 2, 2))


def test_single_step_matches_the_posterior_formula():
    s = DDPMScheduler(clip_sample=False)
    state = s.plan(10)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    t, prev_t = 500, 400
    out = state.step(eps, t, x, generator=torch.Generator().manual_seed(2))
    ab = s.alphas_cumprod.double()
    a_t, a_p = ab[t], ab[prev_t]
    beta = 1 - a_t / a_p
    xd, epsd = x.double(), eps.double()
    x0 = (xd - (1 - a_t).sqrt() * epsd) / a_t.sqrt()
    mean = a_p.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_p) / (1 - a_t) * xd
    var = (1 - a_p) / (1 - a_t) * beta
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2)).double()
    assert torch.allclose(out.pred_original_sample.double(), x0, atol=1e-5)
    assert torch.allclose(out.prev_sample.double(), mean + var.sqrt() * noise, atol=1e-5)


def test_last_step_returns_clipped_x0_and_draws_no_noise():
    state = DDPMScheduler().plan(5)
    x = 3 * torch.randn(1, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    prev, x0 = state.step(torch.randn(1, 3, 4, 4), 0, x, generator=g, return_dict=False)
    assert torch.equal(g.get_state(), before)
    assert torch.equal(prev, x0) and x0.abs().max() <= 1.0


@settings(max_examples=30, deadline=None)
@given(
    variance_type=st.sampled_from(["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"]),
    prediction_type=st.sampled_from(["epsilon", "sample", "v_prediction"]),
    n=st.integers(1, 30),
)
def test_two_states_of_one_scheduler_are_independent(variance_type, prediction_type, n):
    s = DDPMScheduler(variance_type=variance_type, prediction_type=prediction_type)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(n))
    a, b = s.plan(n), s.plan(n)
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    xa, xb = x, x
    for t in a.timesteps:
        xa = a.step(fake_model(xa, t), t, xa, generator=ga).prev_sample
        xb = b.step(fake_model(xb, t), t, xb, generator=gb).prev_sample
    assert torch.equal(xa, run(s.plan(n), x, seed=1))
    assert torch.equal(xb, run(s.plan(n), x, seed=2))
    assert torch.isfinite(xa).all()


def test_legacy_surface_equals_the_plan_api():
    s = DDPMScheduler(prediction_type="v_prediction")
    assert s.timesteps.tolist() == list(range(999, -1, -1))  # the training chain before set_timesteps
    s.set_timesteps(12)
    assert s.num_inference_steps == 12 and s.init_noise_sigma == 1.0
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(3)
    y = x
    for t in s.timesteps:
        y = s.step(fake_model(y, t), t, s.scale_model_input(y, t), g).prev_sample
    assert torch.equal(y, run(s.plan(12), x, seed=3))
    s.set_timesteps(timesteps=[800, 400, 0])
    assert s.timesteps.tolist() == [800, 400, 0]


def test_learned_variances():
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for variance_type in ("learned", "learned_range"):
        state = DDPMScheduler(variance_type=variance_type).plan(4)
        out = torch.cat([fake_model(x, 0), torch.full_like(x, 0.5)], dim=1)
        step = state.step(out, state.timesteps[0], x, generator=torch.Generator().manual_seed(0))
        assert step.prev_sample.shape == x.shape and torch.isfinite(step.prev_sample).all()
        with pytest.raises(ValueError, match="twice the sample's 2 channels"):
            state.step(fake_model(x, 0), state.timesteps[0], x)
    # learned_range at -1 and learned at β̃ are the fixed_small step
    s = DDPMScheduler(variance_type="learned_range")
    state, fixed = s.plan(4), DDPMScheduler().plan(4)
    t, prev_t = state.timesteps[1:3].tolist()
    min_log, _ = schedules.ddpm_log_variance_bounds(s.alphas_cumprod[t], s.alphas_cumprod[prev_t])
    ref = fixed.step(fake_model(x, t), t, x, generator=torch.Generator().manual_seed(5)).prev_sample
    got = state.step(
        torch.cat([fake_model(x, t), -torch.ones_like(x)], 1), t, x, generator=torch.Generator().manual_seed(5)
    )
    assert torch.allclose(got.prev_sample, ref, atol=1e-6)
    learned = DDPMScheduler(variance_type="learned").plan(4)
    var = torch.full_like(x, min_log.exp().item())
    got = learned.step(torch.cat([fake_model(x, t), var], 1), t, x, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(got.prev_sample, ref, atol=1e-6)


def test_step_on_an_accelerator_reads_no_tensor_values():
    # meta tensors hold no data: any .item() or host copy in step would raise
    for cfg in ({}, {"thresholding": True}, {"variance_type": "learned_range"}):
        s = DDPMScheduler(**cfg)
        state = s.plan(5, device="meta")
        channels = 6 if cfg.get("variance_type") else 3
        x = torch.empty(1, 3, 4, 4, device="meta")
        for t in state.timesteps:
            x = state.step(torch.empty(1, channels, 4, 4, device="meta"), t, x).prev_sample
        assert x.device.type == "meta" and state.step_index == 5


def test_add_noise_and_velocity():
    s = DDPMScheduler()
    x0, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 900])
    xt = s.add_noise(x0, eps, t)
    v = s.get_velocity(x0, eps, t)
    a = s.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    b = (1 - s.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(xt, a * x0 + b * eps) and torch.allclose(v, a * eps - b * x0)
    assert s.plan(3).add_noise(x0, eps, t).equal(xt)


def test_config_round_trip(tmp_path):
    s = DDPMScheduler(beta_schedule="squaredcos_cap_v2", variance_type="fixed_large", steps_offset=1, custom_key=3)
    path = s.save_pretrained(tmp_path)
    data = json.loads(path.read_text())
    assert data["_class_name"] == "DDPMScheduler" and data["custom_key"] == 3 and "_diffusers_version" in data
    back = DDPMScheduler.from_pretrained(tmp_path)
    assert back.config.model_dump() == s.config.model_dump() and back.config.extras == {"custom_key": 3}
    assert torch.equal(back.alphas_cumprod, s.alphas_cumprod)
    assert DDPMScheduler.from_pretrained(tmp_path, steps_offset=0).config.steps_offset == 0


def test_outputs():
    state = DDPMScheduler().plan(3)
    x = torch.randn(1, 1, 2, 2)
    out = state.step(x, state.timesteps[0], x)
    assert isinstance(out, SchedulerOutput) and out[0] is out.prev_sample
    assert len(state.step(x, state.timesteps[0], x, return_dict=False)) == 2
