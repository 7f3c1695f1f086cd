"""The pure schedule maths in ``diffkit.schedules``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import schedules as S

FAST = settings(max_examples=50, deadline=None)


# -- betas -----------------------------------------------------------------------------------
def test_linear_and_scaled_linear_betas():
    lin = S.linear_betas(1e-4, 0.02, 1000)
    assert lin.dtype == torch.float32 and lin.shape == (1000,)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)
    scaled = S.scaled_linear_betas(0.00085, 0.012, 1000)
    root = scaled.double().sqrt()
    assert root[0].item() == pytest.approx(0.00085**0.5, rel=1e-6)
    assert root[-1].item() == pytest.approx(0.012**0.5, rel=1e-6)
    steps = root.diff()
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-3)  # √β is linear in t
    assert not torch.allclose(scaled, S.linear_betas(0.00085, 0.012, 1000))


def test_sigmoid_betas_rise_between_the_ends():
    betas = S.sigmoid_betas(1e-4, 0.02, 500)
    assert bool((betas.diff() > 0).all())
    assert 1e-4 < betas[0].item() < betas[-1].item() < 0.02


@pytest.mark.parametrize("kind", ["cosine", "exp", "laplace"])
def test_alpha_bar_betas_discretise_alpha_bar(kind):
    n = 200
    betas = S.alpha_bar_betas(n, kind).double()
    assert bool(((betas > 0) & (betas <= 0.999 + 1e-7)).all())
    fn = S.ALPHA_BARS[kind]
    uncapped = betas < 0.999 - 1e-6
    expected = torch.tensor([1 - fn((i + 1) / n) / fn(i / n) for i in range(n)], dtype=torch.float64)
    assert torch.allclose(betas[uncapped], expected[uncapped], rtol=1e-6, atol=1e-9)


def test_squaredcos_is_capped_at_max_beta():
    betas = S.make_betas("squaredcos_cap_v2", 1000)
    assert betas[-1].item() == pytest.approx(0.999)
    assert torch.equal(betas, S.alpha_bar_betas(1000, S.cosine_alpha_bar))


def test_make_betas_dispatch_and_trained_betas():
    assert torch.equal(S.make_betas("linear", 10, 0.1, 0.2), S.linear_betas(0.1, 0.2, 10))
    assert torch.equal(S.make_betas("exp", 10), S.alpha_bar_betas(10, "exp"))
    assert S.make_betas("linear", 3, trained_betas=[0.1, 0.2, 0.3]).tolist() == pytest.approx([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="allowed values: linear, scaled_linear"):
        S.make_betas("cosine", 10)


@FAST
@given(
    schedule=st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]),
    n=st.integers(2, 1200),
)
def test_rescale_zero_terminal_snr(schedule, n):
    betas = S.make_betas(schedule, n, 0.00085, 0.012)
    before = S.alphas_cumprod(betas)
    after = S.alphas_cumprod(S.rescale_zero_terminal_snr(betas))
    assert after[-1].item() == 0.0
    assert after[0].item() == pytest.approx(before[0].item(), rel=1e-5)
    assert bool((after.diff() <= 0).all())


def test_alphas_cumprod_is_the_product_of_alphas():
    betas = torch.tensor([0.1, 0.2, 0.5])
    assert S.alphas_cumprod(betas).tolist() == pytest.approx([0.9, 0.72, 0.36])


def test_check_train_schedule_names_the_fields():
    with pytest.raises(ValueError, match="trained_betas has 2 values but num_train_timesteps is 3"):
        S.check_train_schedule(3, [0.1, 0.2], 0)
    with pytest.raises(ValueError, match="steps_offset"):
        S.check_train_schedule(10, None, 10)
    S.check_train_schedule(2, [0.1, 0.2], 1)


# -- spacing ---------------------------------------------------------------------------------
def test_known_spacings():
    assert S.spaced_timesteps("leading", 1000, 10, 1).tolist() == list(range(901, 0, -100))
    assert S.spaced_timesteps("trailing", 1000, 10, 1).tolist() == list(range(999, 0, -100))
    assert S.spaced_timesteps("linspace", 1000, 10, 1).tolist() == list(range(999, -1, -111))
    assert S.spaced_timesteps("linspace", 1000, 1).tolist() == [0]
    assert S.spaced_timesteps("trailing", 1000, 1).tolist() == [999]
    assert S.spaced_timesteps("leading", 1000, 1, 1).tolist() == [1]
    floats = S.spaced_timesteps("linspace", 1000, 4, integer=False)
    assert floats.dtype == torch.float32 and floats.tolist() == pytest.approx([999, 666, 333, 0])
    assert S.spaced_timesteps("linspace", 10, 4, integer=False).tolist() == pytest.approx([9, 6, 3, 0])
    assert S.spaced_timesteps("linspace", 11, 4, integer=False).tolist() == pytest.approx([10, 20 / 3, 10 / 3, 0])


@FAST
@given(spacing=st.sampled_from(S.SPACINGS), t=st.integers(1, 2000), data=st.data())
def test_spacing_properties(spacing, t, data):
    n = data.draw(st.integers(1, t))
    offset = data.draw(st.integers(0, t - 1 - (n - 1) * (t // n))) if spacing == "leading" else 0
    ts = S.spaced_timesteps(spacing, t, n, offset)
    assert ts.dtype == torch.int64 and ts.shape == (n,)
    assert bool((ts.diff() < 0).all())
    assert 0 <= ts[-1].item() and ts[0].item() < t


@FAST
@given(t=st.integers(1, 2000), data=st.data())
def test_spacing_matches_numpy_arithmetic(t, data):
    n = data.draw(st.integers(1, t))
    ref_linspace = np.linspace(0, t - 1, n).round()[::-1].astype(np.int64)
    assert S.linspace_timesteps(t, n).tolist() == ref_linspace.tolist()
    ref_trailing = (np.round(np.arange(t, 0, -t / n)).astype(np.int64) - 1)[:n]
    assert S.trailing_timesteps(t, n).tolist() == ref_trailing.tolist()


def test_spacing_rejects_bad_requests():
    with pytest.raises(ValueError, match="between 1 and num_train_timesteps"):
        S.spaced_timesteps("leading", 1000, 1001)
    with pytest.raises(ValueError, match="between 1 and"):
        S.spaced_timesteps("trailing", 1000, 0)
    with pytest.raises(ValueError, match="steps_offset=1 and num_inference_steps=1000"):
        S.spaced_timesteps("leading", 1000, 1000, 1)
    with pytest.raises(ValueError, match="allowed values: leading, trailing, linspace"):
        S.spaced_timesteps("karras", 1000, 10)


def test_check_timesteps():
    assert S.check_timesteps([999, 500, 0], 1000).tolist() == [999, 500, 0]
    assert S.check_timesteps(torch.tensor([5]), 10).dtype == torch.int64
    for bad in ([1, 2], [5, 5], [1000, 3], [3, -1], []):
        with pytest.raises(ValueError):
            S.check_timesteps(bad, 1000)


# -- prediction types ------------------------------------------------------------------------
@FAST
@given(ab=st.floats(0.001, 0.999), as_tensor=st.booleans(), seed=st.integers(0, 2**16))
def test_prediction_conversions_invert_the_forward_process(ab, as_tensor, seed):
    g = torch.Generator().manual_seed(seed)
    x0, eps = (
        torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64),
        torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64),
    )
    alpha, sigma = math.sqrt(ab), math.sqrt(1 - ab)
    if as_tensor:
        alpha, sigma = torch.tensor(alpha, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
    x = alpha * x0 + sigma * eps
    v = alpha * eps - sigma * x0
    for pt, out in (("epsilon", eps), ("sample", x0), ("v_prediction", v)):
        assert torch.allclose(S.x0_from_prediction(out, x, alpha, sigma, pt), x0, atol=1e-7 / min(alpha, sigma))
        assert torch.allclose(S.eps_from_prediction(out, x, alpha, sigma, pt), eps, atol=1e-7 / min(alpha, sigma))
    assert torch.allclose(S.eps_from_x0(x0, x, alpha, sigma), eps, atol=1e-7 / min(alpha, sigma))


def test_identity_predictions_return_the_model_output():
    out, x = torch.randn(3), torch.randn(3)
    assert S.x0_from_prediction(out, x, 0.5, 0.8, "sample") is out
    assert S.eps_from_prediction(out, x, 0.5, 0.8, "epsilon") is out
    for fn in (S.x0_from_prediction, S.eps_from_prediction):
        with pytest.raises(ValueError, match="allowed values: epsilon, sample, v_prediction"):
            fn(out, x, 0.5, 0.8, "flow")


def test_axpby_keeps_type_promotion():
    x16, x32 = torch.ones(4, dtype=torch.float16), torch.ones(4)
    assert S.axpby(2.0, x16, 3.0, x16).dtype == torch.float16
    mixed = S.axpby(2.0, x16, 3.0, x32)
    assert mixed.dtype == torch.float32 and mixed.tolist() == [5.0] * 4
    assert S.axpby(torch.tensor(2.0), x32, 1.0, torch.ones(2, 4)).shape == (2, 4)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 3),
    n=st.integers(1, 400),
    q=st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.995, 1.0]), st.floats(0, 1)),
    ties=st.booleans(),
    special=st.sampled_from([None, math.nan, math.inf]),
    seed=st.integers(0, 2**16),
)
def test_row_quantile_equals_torch_quantile(rows, n, q, ties, special, seed):
    x = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed))
    if ties:
        x = x.round()
    if special is not None:
        x[0, seed % n] = special
    ours, ref = S.row_quantile(x, q), torch.quantile(x, q, dim=1)
    assert torch.equal(ours.isnan(), ref.isnan())
    assert torch.equal(ours.nan_to_num(0.0), ref.nan_to_num(0.0))


def test_dynamic_threshold():
    x = torch.cat(
        [torch.linspace(-0.5, 0.5, 100).reshape(1, 1, 10, 10), torch.linspace(-4, 4, 100).reshape(1, 1, 10, 10)]
    )
    out = S.dynamic_threshold(x, 0.9, 5.0)
    assert torch.equal(out[0], x[0])  # s clamps to 1 and nothing exceeds it
    s = torch.quantile(x[1].abs().flatten(), 0.9).item()
    assert out[1].abs().max().item() == pytest.approx(1.0)
    assert torch.allclose(out[1], x[1].clamp(-s, s) / s)
    capped = S.dynamic_threshold(x, 0.999, 2.0)
    assert torch.allclose(capped[1], x[1].clamp(-2, 2) / 2)
    half = S.dynamic_threshold(x.half(), 0.9, 5.0)
    assert half.dtype == torch.float16 and torch.allclose(half.float(), out, atol=1e-3)


def test_bound_x0():
    x = torch.tensor([-3.0, 0.5, 3.0])
    assert S.bound_x0(x, None, None) is x
    clipped = S.bound_x0(x, None, 2.0)
    assert clipped.tolist() == [-2.0, 0.5, 2.0] and x.tolist() == [-3.0, 0.5, 3.0]
    assert S.bound_x0(x, None, 1.0, inplace=True) is x and x.tolist() == [-1.0, 0.5, 1.0]
    assert S.bound_x0(torch.tensor([[-4.0, 2.0]]), (1.0, 4.0), 1.0).tolist() == [[-1.0, 0.5]]


# -- forward process and variances -----------------------------------------------------------
def test_add_noise_and_velocity_per_sample():
    ab = S.alphas_cumprod(S.linear_betas(1e-4, 0.02, 1000))
    x0, eps = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    a, s = ab[t].sqrt().view(3, 1, 1, 1), (1 - ab[t]).sqrt().view(3, 1, 1, 1)
    xt = S.add_noise(ab, x0, eps, t)
    assert torch.allclose(xt, a * x0 + s * eps, atol=1e-6)
    v = S.velocity(ab, x0, eps, t)
    assert torch.allclose(a * xt - s * v, x0, atol=1e-5)  # x0 = α·x_t - σ·v
    one = S.add_noise(ab, x0, eps, 500)
    assert torch.allclose(one, ab[500].sqrt() * x0 + (1 - ab[500]).sqrt() * eps, atol=1e-6)
    assert S.add_noise(ab, x0.half(), eps.half(), t).dtype == torch.float16


def test_ddpm_variance_types_agree_with_each_other():
    ab = S.alphas_cumprod(S.linear_betas(1e-4, 0.02, 1000))
    t, prev = ab[torch.tensor([999, 500, 1])], ab[torch.tensor([899, 400, 0])]
    small = S.posterior_variance(t, prev)
    beta = S.step_beta(t, prev)
    assert bool((small < beta).all())
    assert torch.allclose(S.ddpm_noise_std(t, prev, "fixed_small"), small.sqrt())
    assert torch.allclose(S.ddpm_noise_std(t, prev, "fixed_small_log"), small.sqrt(), rtol=1e-5)
    assert torch.allclose(S.ddpm_noise_std(t, prev, "fixed_large"), beta.sqrt())
    assert torch.allclose(S.ddpm_noise_std(t, prev, "fixed_large_log"), beta.sqrt(), rtol=1e-5)
    with pytest.raises(ValueError, match="not a fixed variance"):
        S.ddpm_noise_std(t, prev, "learned")
    min_log, max_log = S.ddpm_log_variance_bounds(t, prev)
    lo = S.learned_range_std(torch.full((2,), -1.0), min_log[1].item(), max_log[1].item())
    hi = S.learned_range_std(torch.full((2,), 1.0), min_log[1].item(), max_log[1].item())
    assert lo.tolist() == pytest.approx([small[1].sqrt().item()] * 2, rel=1e-5)
    assert hi.tolist() == pytest.approx([beta[1].sqrt().item()] * 2, rel=1e-5)
    # with ᾱ_prev = 1 the posterior collapses; the floor keeps its logarithm finite
    assert S.ddpm_noise_std(t[2:], torch.ones(1), "fixed_small").item() == pytest.approx(S.MIN_VARIANCE**0.5)


def test_ddpm_posterior_coefficients_reproduce_x0_at_the_end():
    ab = S.alphas_cumprod(S.linear_betas(1e-4, 0.02, 1000))
    c0, c1 = S.ddpm_posterior_coefficients(ab[:1], torch.ones(1))
    assert c0.item() == pytest.approx(1.0) and c1.item() == 0.0
    c0, c1 = S.ddpm_posterior_coefficients(ab[10:11], ab[9:10])
    beta = 1 - ab[10] / ab[9]
    assert c0.item() == pytest.approx((ab[9].sqrt() * beta / (1 - ab[10])).item())
    assert c1.item() == pytest.approx(((1 - beta).sqrt() * (1 - ab[9]) / (1 - ab[10])).item())


def test_ddim_noise_terms():
    ab = S.alphas_cumprod(S.linear_betas(1e-4, 0.02, 1000))
    ab_t, ab_prev = ab[torch.tensor([900, 500])], ab[torch.tensor([800, 400])]
    sqrt_var = S.posterior_variance(ab_t, ab_prev).sqrt()
    std, direction = S.ddim_noise_terms(0.0, sqrt_var, ab_prev)
    assert std.tolist() == [0.0, 0.0] and torch.allclose(direction, (1 - ab_prev).sqrt())
    std, direction = S.ddim_noise_terms(1.0, sqrt_var, ab_prev)
    assert torch.allclose(std**2 + direction**2, 1 - ab_prev)  # the noise budget is 1 - ᾱ_prev
    assert bool((direction < (1 - ab_prev).sqrt()).all())


# -- timestep lookup -------------------------------------------------------------------------
def test_timestep_value():
    ts = torch.tensor([9, 6, 3, 0])
    host = ts.tolist()
    assert S.timestep_value(6, ts, host) == 6
    assert S.timestep_value(np.int64(3), ts, host) == 3
    assert S.timestep_value(3.0, ts, host) == 3
    assert S.timestep_value(torch.tensor(7), ts, host) == 7
    with pytest.raises(ValueError, match="integer"):
        S.timestep_value(2.5, ts, host)
    with pytest.raises(ValueError, match="single value"):
        S.timestep_value(ts, ts, host)


def test_view_position_reads_no_device_memory():
    # on the meta device nothing can be read, so a result proves the lookup is metadata-only
    ts = torch.tensor([9, 6, 3, 0]).to("meta")
    host = [9, 6, 3, 0]
    assert [S.view_position(t, ts) for t in ts] == [0, 1, 2, 3]
    assert [S.timestep_value(t, ts, host) for t in ts[1:]] == [6, 3, 0]
    assert S.view_position(ts[2:][0], ts) == 2
    assert S.view_position(torch.empty((), dtype=torch.int64, device="meta"), ts) is None
    assert S.view_position(ts.float()[1], ts) is None
    cpu = torch.tensor([9, 6, 3, 0])
    assert S.view_position(cpu[1], cpu) == 1 and S.view_position(cpu[1].clone(), cpu) is None
