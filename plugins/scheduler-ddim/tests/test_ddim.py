import subprocess
import sys

import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_ddim.ddim import DDIMScheduler


def fake_model(x, t):
    return 0.3 * x + torch.cos(torch.as_tensor(t, dtype=x.dtype) / 70 + torch.arange(x.shape[1]).view(1, -1, 1, 1))


def run(state, x, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    for t in state.timesteps:
        x = state.step(fake_model(x, t), t, x, generator=g, **kwargs).prev_sample
    return x


def reference_step(s, n, model_output, t, x, eta=0.0, noise=None, use_clipped=False):
    """DDIM in float64 from the paper's formulas, with the prev_t = t - T//N rule."""
    ab = s.alphas_cumprod.double()
    prev_t = t - s.config.num_train_timesteps // n
    a_t = ab[t]
    a_p = ab[prev_t] if prev_t >= 0 else s.final_alpha_cumprod.double()
    x, out = x.double(), model_output.double()
    eps = {
        "epsilon": out,
        "sample": (x - a_t.sqrt() * out) / (1 - a_t).sqrt(),
        "v_prediction": a_t.sqrt() * out + (1 - a_t).sqrt() * x,
    }[s.config.prediction_type]
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if s.config.clip_sample:
        x0 = x0.clamp(-s.config.clip_sample_range, s.config.clip_sample_range)
    if use_clipped:
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    sigma = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).sqrt()
    prev = a_p.sqrt() * x0 + (1 - a_p - sigma**2).sqrt() * eps
    return prev + sigma * noise.double() if eta > 0 else prev


def test_registered_under_its_class_name():
    assert registry.get("scheduler", "DDIMScheduler") is DDIMScheduler


def test_plugin_entry_modules_do_not_import_torch():
    code = "import sys, diffkit_scheduler_ddim, diffkit_scheduler_ddim.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_are_diffusers_defaults():
    assert DDIMScheduler().config.model_dump() == {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": None,
        "clip_sample": True,
        "set_alpha_to_one": True,
        "steps_offset": 0,
        "prediction_type": "epsilon",
        "thresholding": False,
        "dynamic_thresholding_ratio": 0.995,
        "clip_sample_range": 1.0,
        "sample_max_value": 1.0,
        "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
    }
    assert "DDPMScheduler" in DDIMScheduler.compatibles_names and len(DDIMScheduler.compatibles_names) == 15


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta_schedule": "sigmoid"}, r"beta_schedule.*'linear', 'scaled_linear' or 'squaredcos_cap_v2'"),
        ({"prediction_type": "flow"}, r"prediction_type.*'epsilon', 'sample' or 'v_prediction'"),
        (
            {"num_train_timesteps": 3, "trained_betas": [0.1]},
            r"trained_betas has 1 values but num_train_timesteps is 3",
        ),
        ({"clip_sample_range": 0}, r"clip_sample_range"),
    ],
)
def test_invalid_configs_are_rejected_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DDIMScheduler(**kwargs)


def test_tables_and_final_alpha():
    assert DDIMScheduler().final_alpha_cumprod.item() == 1.0
    s = DDIMScheduler(set_alpha_to_one=False, beta_schedule="squaredcos_cap_v2")
    assert s.final_alpha_cumprod.item() == s.alphas_cumprod[0].item()
    assert DDIMScheduler(rescale_betas_zero_snr=True).alphas_cumprod[-1].item() == 0.0


def test_scheduler_is_immutable():
    s = DDIMScheduler()
    with pytest.raises(AttributeError, match="immutable"):
        s.final_alpha_cumprod = torch.tensor(0.5)
    with pytest.raises(pydantic.ValidationError):
        s.config.eta = 1


def test_plan_validation():
    s = DDIMScheduler(timestep_spacing="trailing")
    assert s.plan(10).timesteps.tolist() == list(range(999, 0, -100))
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.plan()
    with pytest.raises(ValueError, match="custom timesteps"):
        s.plan(timesteps=[10, 5])
    with pytest.raises(ValueError, match="between 1 and"):
        s.plan(2000)


@settings(max_examples=40, deadline=None)
@given(
    prediction_type=st.sampled_from(["epsilon", "sample", "v_prediction"]),
    spacing=st.sampled_from(["leading", "trailing", "linspace"]),
    clip=st.booleans(),
    set_alpha_to_one=st.booleans(),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    use_clipped=st.booleans(),
    n=st.integers(1, 50),
    i=st.integers(0, 49),
)
def test_step_matches_the_ddim_formula(prediction_type, spacing, clip, set_alpha_to_one, eta, use_clipped, n, i):
    s = DDIMScheduler(
        prediction_type=prediction_type, timestep_spacing=spacing, clip_sample=clip, set_alpha_to_one=set_alpha_to_one
    )
    state = s.plan(n)
    t = int(state.timesteps[i % n])
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(i))
    out = fake_model(x, t)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(i + 1))
    got = state.step(out, t, x, eta=eta, variance_noise=noise, use_clipped_model_output=use_clipped).prev_sample
    expected = reference_step(s, n, out, t, x, eta, noise, use_clipped)
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_step_lands_on_t_minus_stride_whatever_the_spacing():
    s = DDIMScheduler(timestep_spacing="linspace", clip_sample=False)
    state = s.plan(10)  # timesteps 999, 888, …; each step still goes to t - 100
    x = torch.randn(1, 2, 4, 4)
    t = 888
    out = state.step(torch.zeros_like(x), t, x).prev_sample  # ε = 0: x_prev = √(ᾱ_prev/ᾱ_t)·x
    ratio = (s.alphas_cumprod[788] / s.alphas_cumprod[888]).sqrt()
    assert torch.allclose(out, ratio * x, rtol=1e-5)
    off_schedule = state.step(torch.zeros_like(x), 500, x).prev_sample  # any t in [0, T) works
    assert torch.allclose(off_schedule, (s.alphas_cumprod[400] / s.alphas_cumprod[500]).sqrt() * x, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        state.step(x, 1000, x)


def test_noise_arguments():
    state = DDIMScheduler().plan(10)
    x = torch.randn(1, 2, 4, 4)
    t = state.timesteps[3]
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="either generator or variance_noise"):
        state.step(x, t, x, generator=g, variance_noise=x, eta=0.5)
    # as in diffusers, both are accepted when no noise is drawn
    deterministic = state.step(x, t, x, generator=g, variance_noise=x).prev_sample
    assert torch.equal(deterministic, state.step(x, t, x).prev_sample)
    noise = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    a = state.step(x, t, x, eta=0.7, generator=torch.Generator().manual_seed(4)).prev_sample
    b = state.step(x, t, x, eta=0.7, variance_noise=noise).prev_sample
    assert torch.equal(a, b)
    before = g.get_state()
    state.step(x, t, x, generator=g)
    assert torch.equal(g.get_state(), before)  # eta = 0 draws nothing


@settings(max_examples=30, deadline=None)
@given(eta=st.sampled_from([0.0, 0.5, 1.0]), n=st.integers(1, 30), spacing=st.sampled_from(["leading", "trailing"]))
def test_two_states_of_one_scheduler_are_independent(eta, n, spacing):
    s = DDIMScheduler(timestep_spacing=spacing)
    x = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(n))
    a, b = s.plan(n), s.plan(max(1, n // 2))
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    xa, xb = x, x
    for ta, tb in zip(a.timesteps, list(b.timesteps) + [None] * (len(a) - len(b)), strict=True):
        xa = a.step(fake_model(xa, ta), ta, xa, generator=ga, eta=eta).prev_sample
        if tb is not None:
            xb = b.step(fake_model(xb, tb), tb, xb, generator=gb, eta=eta).prev_sample
    assert torch.equal(xa, run(s.plan(n), x, seed=1, eta=eta))
    assert torch.equal(xb, run(s.plan(max(1, n // 2)), x, seed=2, eta=eta))


def test_legacy_surface():
    s = DDIMScheduler()
    assert s.timesteps.tolist() == list(range(999, -1, -1))
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="set_timesteps"):
        s.step(x, 999, x)
    s.set_timesteps(8)
    y = x
    for t in s.timesteps:
        # diffusers' positional order: eta, use_clipped_model_output, generator
        y = s.step(fake_model(y, t), t, y, 1.0, True, None, torch.ones_like(y)).prev_sample
    z = x
    state = s.plan(8)
    for t in state.timesteps:
        z = state.step(
            fake_model(z, t), t, z, eta=1.0, use_clipped_model_output=True, variance_noise=torch.ones_like(z)
        ).prev_sample
    assert torch.equal(y, z)
    prev, x0 = s.step(x, s.timesteps[0], x, return_dict=False)
    assert prev.shape == x0.shape == x.shape


def test_step_on_an_accelerator_reads_no_tensor_values():
    for cfg in ({}, {"thresholding": True, "prediction_type": "v_prediction"}):
        state = DDIMScheduler(**cfg).plan(5, device="meta")
        x = torch.empty(1, 3, 4, 4, device="meta")
        for t in state.timesteps:
            x = state.step(torch.empty(1, 3, 4, 4, device="meta"), t, x, eta=0.5).prev_sample
        assert x.device.type == "meta" and state.step_index == 5


def test_config_round_trip_and_swap_with_ddpm(tmp_path):
    s = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, set_alpha_to_one=False)
    s.save_pretrained(tmp_path)
    back = DDIMScheduler.from_pretrained(tmp_path)
    assert back.config.model_dump() == s.config.model_dump()
    assert torch.equal(back.alphas_cumprod, s.alphas_cumprod)

    ddpm_module = pytest.importorskip("diffkit_scheduler_ddpm.ddpm")
    ddpm = ddpm_module.DDPMScheduler.from_config(s.config)
    assert ddpm.config.beta_schedule == "scaled_linear" and ddpm.config.variance_type == "fixed_small"
    assert ddpm.config.extras == {"set_alpha_to_one": False}
    assert torch.equal(ddpm.alphas_cumprod, s.alphas_cumprod)
    again = DDIMScheduler.from_config(ddpm.config)
    assert again.config.model_dump() == s.config.model_dump()
    installed = {c.__name__ for c in s.compatibles}
    assert {"DDIMScheduler", "DDPMScheduler"} <= installed <= set(DDIMScheduler.compatibles_names)
