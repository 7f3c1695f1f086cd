"""``DiagonalGaussianDistribution``: the latent posterior that a KL autoencoder's encoder predicts.

The encoder's output stacks the mean and the log-variance along the channel axis; sampling
draws its noise through :func:`diffkit.randomness.randn_tensor`, so a seeded generator gives
the latents diffusers gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffkit.randomness import randn_tensor

#: the log-variance is clamped to this range before it is exponentiated
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


class DiagonalGaussianDistribution:
    """A Gaussian with independent components: ``mean`` and ``logvar`` are halves of ``parameters``.

    ``deterministic`` makes it a point mass at ``mean`` (zero ``std`` and ``var``).
    """

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False) -> None:
        if parameters.ndim < 2 or parameters.shape[1] % 2:
            raise ValueError(
                f"parameters must stack mean and log-variance on dim 1 (an even channel count); "
                f"got shape {tuple(parameters.shape)}"
            )
        self.parameters = parameters
        self.deterministic = deterministic
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)
        if deterministic:
            self.std = self.var = torch.zeros_like(self.mean)
        else:
            # std = exp(logvar / 2), var = exp(logvar)
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
        """``mean + std * eps`` with ``eps`` drawn on the parameters' device and dtype."""
        noise = randn_tensor(
            self.mean.shape, generator=generator, device=self.parameters.device, dtype=self.parameters.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        """The most likely latents: the mean."""
        return self.mean

    def kl(self, other: DiagonalGaussianDistribution | None = None) -> torch.Tensor:
        """KL divergence to ``other`` (the standard normal when ``None``), summed per batch item."""
        if self.deterministic:
            return torch.zeros(1)
        if other is None:
            # KL(N(m, v) || N(0, 1)) = 1/2 sum(m^2 + v - 1 - log v)
            terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        else:
            # KL(N(m, v) || N(m', v')) = 1/2 sum((m - m')^2 / v' + v / v' - 1 - log v + log v')
            ratio = self.var / other.var
            terms = (self.mean - other.mean).pow(2) / other.var + ratio - 1.0 - self.logvar + other.logvar
        return 0.5 * torch.sum(terms, dim=[1, 2, 3])

    def nll(self, sample: torch.Tensor, dims: Sequence[int] = (1, 2, 3)) -> torch.Tensor:
        """Negative log-likelihood of ``sample``, summed over ``dims``."""
        if self.deterministic:
            return torch.zeros(1)
        # -log p(x) = 1/2 sum(log 2 pi + log v + (x - m)^2 / v)
        terms = math.log(2.0 * math.pi) + self.logvar + (sample - self.mean).pow(2) / self.var
        return 0.5 * torch.sum(terms, dim=list(dims))
