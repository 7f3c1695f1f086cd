"""DiagonalGaussianDistribution against the Gaussian formulas and randn_tensor's draws."""

import math

import pytest
import torch

from diffkit.randomness import randn_tensor
from diffkit_models_autoencoder.distribution import DiagonalGaussianDistribution


def _params(batch: int = 2, channels: int = 3, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(batch, 2 * channels, 4, 5, generator=torch.Generator().manual_seed(seed))


def test_halves_and_clamped_log_variance():
    params = _params()
    params[:, 3:, 0, 0] = 100.0
    dist = DiagonalGaussianDistribution(params)
    assert torch.equal(dist.mean, params[:, :3]) and torch.equal(dist.mode(), dist.mean)
    assert dist.logvar.max() == 20.0
    torch.testing.assert_close(dist.var, dist.std**2)
    torch.testing.assert_close(dist.std, torch.exp(params[:, 3:].clamp(-30, 20) / 2))


def test_sample_draws_like_randn_tensor_per_generator():
    dist = DiagonalGaussianDistribution(_params())
    gens = [torch.Generator().manual_seed(s) for s in (4, 5)]
    drawn = dist.sample(generator=gens)
    noise = randn_tensor(dist.mean.shape, generator=[torch.Generator().manual_seed(s) for s in (4, 5)])
    assert torch.equal(drawn, dist.mean + dist.std * noise)
    second = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(drawn[1:], dist.mean[1:] + dist.std[1:] * second)


def test_kl_and_nll_follow_the_formulas():
    dist, other = DiagonalGaussianDistribution(_params(seed=1)), DiagonalGaussianDistribution(_params(seed=2))
    m, v = dist.mean.double(), dist.var.double()
    torch.testing.assert_close(dist.kl().double(), 0.5 * (m**2 + v - 1 - v.log()).sum((1, 2, 3)))
    m2, v2 = other.mean.double(), other.var.double()
    expected = 0.5 * ((m - m2) ** 2 / v2 + v / v2 - 1 - v.log() + v2.log()).sum((1, 2, 3))
    torch.testing.assert_close(dist.kl(other).double(), expected, rtol=1e-5, atol=1e-3)
    x = torch.randn_like(dist.mean)
    nll = 0.5 * (math.log(2 * math.pi) + v.log() + (x.double() - m) ** 2 / v).sum((1, 2, 3))
    torch.testing.assert_close(dist.nll(x).double(), nll, rtol=1e-5, atol=1e-3)


def test_deterministic_is_a_point_mass():
    dist = DiagonalGaussianDistribution(_params(), deterministic=True)
    assert not dist.std.any() and not dist.var.any()
    assert torch.equal(dist.sample(torch.Generator().manual_seed(0)), dist.mean)
    assert torch.equal(dist.kl(), torch.zeros(1)) and torch.equal(dist.nll(dist.mean), torch.zeros(1))


def test_parameters_need_an_even_channel_count():
    with pytest.raises(ValueError, match="even channel count"):
        DiagonalGaussianDistribution(torch.zeros(1, 3, 2, 2))
