"""Timestep projections (sinusoidal, Gaussian Fourier) and the MLP that embeds them."""

from __future__ import annotations

import math

import torch
from torch import nn

from .activations import activation


def sinusoidal_embedding(
    timesteps: torch.Tensor,
    dim: int,
    *,
    flip_sin_to_cos: bool = False,
    freq_shift: float = 1.0,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Transformer-style ``(len(timesteps), dim)`` features of 1-D ``timesteps``, in float32.

    Frequencies are ``max_period ** (-i / (dim // 2 - freq_shift))``; the sines come first
    unless ``flip_sin_to_cos``; an odd ``dim`` gets a zero last column.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D, got shape {tuple(timesteps.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    angles = timesteps[:, None].float() * freqs[None, :]
    sin, cos = torch.sin(angles), torch.cos(angles)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class SinusoidalProjection(nn.Module):
    """Weightless :func:`sinusoidal_embedding` of timesteps (DDPM's positional embedding)."""

    def __init__(self, dim: int, flip_sin_to_cos: bool, freq_shift: float) -> None:
        super().__init__()
        self.dim = dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding(
            timesteps, self.dim, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift
        )


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of ``log(sigma)`` (NCSN++): ``[sin, cos](2π · log σ · w)``.

    ``weight`` holds fixed random frequencies (``N(0, scale²)``), saved with the checkpoint.
    ``log=False`` projects the values themselves (Dance Diffusion's ``t`` in [0, 1]);
    ``flip_sin_to_cos`` puts the cosines first.
    """

    def __init__(
        self, embedding_size: int, scale: float = 1.0, *, log: bool = True, flip_sin_to_cos: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)
        self.log = log
        self.flip_sin_to_cos = flip_sin_to_cos

    def forward(self, sigmas: torch.Tensor) -> torch.Tensor:
        values = torch.log(sigmas) if self.log else sigmas
        angles = values[:, None] * self.weight[None, :] * 2 * math.pi
        sin, cos = torch.sin(angles), torch.cos(angles)
        return torch.cat([cos, sin] if self.flip_sin_to_cos else [sin, cos], dim=-1)


class TimestepEmbedding(nn.Module):
    """``linear_2(act(linear_1(x)))``: maps projected timesteps to the time-embedding width
    (``out_dim`` when given: UNet1DModel's embedding MLP narrows back to its first width)."""

    def __init__(self, in_channels: int, embed_dim: int, act_fn: str = "silu", out_dim: int | None = None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, embed_dim)
        self.act = activation(act_fn)
        self.linear_2 = nn.Linear(embed_dim, embed_dim if out_dim is None else out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))
