"""The pieces of the K-diffusion UNet blocks (Stable Diffusion's x2 latent upscaler): a GroupNorm
whose scale and shift come from the time embedding, the resnet built on it, and the fixed
``(1, 3, 3, 1) / 8`` resampling filters with reflect padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import activation

#: channels per GroupNorm group in the K-diffusion blocks
K_GROUP_SIZE = 32
#: the separable filter of the K-diffusion resampling layers
_K_TAPS = (1 / 8, 3 / 8, 3 / 8, 1 / 8)


class AdaGroupNorm(nn.Module):
    """GroupNorm without own affine; ``x * (1 + scale) + shift`` with ``[scale, shift] = linear(emb)``."""

    def __init__(self, embedding_dim: int, channels: int, num_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.linear = nn.Linear(embedding_dim, channels * 2)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(emb)[:, :, None, None].chunk(2, dim=1)
        return F.group_norm(x, self.num_groups, eps=self.eps) * (1 + scale) + shift


class ResnetBlockCondNorm2D(nn.Module):
    """Two (time-conditioned GroupNorm, activation, conv) stages plus a residual through a
    bias-free 1x1 conv when the widths differ. ``conv_out_channels`` lets the second conv widen
    or narrow the output (the K up blocks' last resnet); ``groups_out`` (default: a group per 32
    output channels) sets the second norm's groups."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float = 0.0,
        conv_out_channels: int | None = None,
        groups_out: int | None = None,
    ) -> None:
        super().__init__()
        final = conv_out_channels or out_channels
        groups_out = out_channels // K_GROUP_SIZE if groups_out is None else groups_out
        self.norm1 = AdaGroupNorm(temb_channels, in_channels, in_channels // K_GROUP_SIZE, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = AdaGroupNorm(temb_channels, out_channels, groups_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, final, kernel_size=3, padding=1)
        self.nonlinearity = activation(act_fn)
        self.conv_shortcut = nn.Conv2d(in_channels, final, kernel_size=1, bias=False) if in_channels != final else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x, temb)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h, temb))))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


def _k_kernel(x: torch.Tensor, gain: float) -> torch.Tensor:
    """The per-channel ``outer(taps, taps) * gain²`` filter as a depthwise conv weight."""
    line = torch.tensor(_K_TAPS, dtype=x.dtype, device=x.device) * gain
    return torch.outer(line, line).expand(x.shape[1], 1, len(_K_TAPS), len(_K_TAPS))


def k_downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve height and width: reflect-pad by 1, filter, stride 2."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, _k_kernel(x, 1.0), stride=2, groups=x.shape[1])


def k_upsample(x: torch.Tensor) -> torch.Tensor:
    """Double height and width: reflect-pad by 1, transposed filter (gain 2 per axis), stride 2."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.conv_transpose2d(padded, _k_kernel(x, 2.0), stride=2, padding=3, groups=x.shape[1])
