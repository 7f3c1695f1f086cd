"""Timestep projections (sinusoidal, Gaussian Fourier), the MLP that embeds them, and the
extra embeddings that conditioned UNets add to the time embedding (text, image)."""

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
    """``post_act(linear_2(act(linear_1(x + cond_proj(condition)))))``: maps projected timesteps
    to the time-embedding width (``out_dim`` when given: UNet1DModel's embedding MLP narrows
    back to its first width).

    ``cond_proj_dim`` adds a bias-free projection of an extra condition to the input (the
    guidance-scale embedding of LCM UNets); ``post_act_fn`` an activation after the MLP.
    """

    def __init__(
        self,
        in_channels: int,
        embed_dim: int,
        act_fn: str = "silu",
        out_dim: int | None = None,
        *,
        post_act_fn: str | None = None,
        cond_proj_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, embed_dim)
        self.cond_proj = nn.Linear(cond_proj_dim, in_channels, bias=False) if cond_proj_dim is not None else None
        self.act = activation(act_fn)
        self.linear_2 = nn.Linear(embed_dim, embed_dim if out_dim is None else out_dim)
        self.post_act = activation(post_act_fn) if post_act_fn is not None else None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is not None:
            if self.cond_proj is None:
                raise ValueError(
                    "timestep_cond was given but this time embedding has no condition projection "
                    "(the model's config sets no time_cond_proj_dim)"
                )
            x = x + self.cond_proj(condition)
        out = self.linear_2(self.act(self.linear_1(x)))
        return out if self.post_act is None else self.post_act(out)


class AttentionPooling(nn.Module):
    """Multi-head attention of one query, the mean token plus a learned position, over that
    query and all tokens: pools ``(batch, tokens, dim)`` to ``(batch, dim)``."""

    def __init__(self, num_heads: int, dim: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention pooling: width {dim} is not divisible by num_heads={num_heads}")
        self.positional_embedding = nn.Parameter(torch.randn(1, dim) / dim**0.5)
        self.k_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        query_token = x.mean(dim=1, keepdim=True) + self.positional_embedding.to(x.dtype)
        tokens = torch.cat([query_token, x], dim=1)
        q = self._heads(self.q_proj(query_token))
        k = self._heads(self.k_proj(tokens))
        v = self._heads(self.v_proj(tokens))
        # scores = (q / d^(1/4)) · (k / d^(1/4)): the split scale keeps float16 in range
        scale = self.head_dim**-0.25
        weights = torch.softmax(((q * scale) @ (k * scale).transpose(-1, -2)).float(), dim=-1).to(q.dtype)
        return (weights @ v).transpose(1, 2).reshape(batch, dim)


class TextTimeEmbedding(nn.Module):
    """An embedding of the text encoder's tokens added to the time embedding: LayerNorm,
    attention pooling, a projection to the time width and a second LayerNorm."""

    def __init__(self, encoder_dim: int, time_embed_dim: int, num_heads: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(encoder_dim)
        self.pool = AttentionPooling(num_heads, encoder_dim)
        self.proj = nn.Linear(encoder_dim, time_embed_dim)
        self.norm2 = nn.LayerNorm(time_embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.proj(self.pool(self.norm1(tokens))))


class ImageTimeEmbedding(nn.Module):
    """An image embedding projected to the time width and layer-normalised (Kandinsky-style
    ``addition_embed_type='image'``)."""

    def __init__(self, image_embed_dim: int, time_embed_dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_embed_dim, time_embed_dim)
        self.image_norm = nn.LayerNorm(time_embed_dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.image_norm(self.image_proj(image_embeds))
