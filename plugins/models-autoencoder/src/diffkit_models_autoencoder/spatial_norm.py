"""Spatially conditioned normalisation (MoVQ) and the residual block built on it.

MoVQ's decoder modulates every normalised feature map with a per-pixel scale and shift
computed from the quantized latents, resized to the map's resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffkit_models_unet.activations import activation

#: GroupNorm groups and epsilon of ``SpatialNorm``, fixed by the architecture
SPATIAL_NORM_GROUPS = 32
SPATIAL_NORM_EPS = 1e-6


class SpatialNorm(nn.Module):
    """``GroupNorm(f) * conv_y(zq) + conv_b(zq)``, with ``zq`` resized (nearest) to ``f``'s size."""

    def __init__(self, f_channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(SPATIAL_NORM_GROUPS, f_channels, eps=SPATIAL_NORM_EPS, affine=True)
        self.conv_y = nn.Conv2d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = nn.Conv2d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        if zq is None:
            raise ValueError("SpatialNorm needs the quantized latents (norm_type='spatial' decodes with them)")
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class SpatialNormResnetBlock2D(nn.Module):
    """A residual block whose two norms are :class:`SpatialNorm` conditioned on ``zq``.

    Parameter names are those of diffusers' ``ResnetBlockCondNorm2D`` with
    ``time_embedding_norm="spatial"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        zq_channels: int,
        *,
        act_fn: str = "silu",
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = SpatialNorm(in_channels, zq_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = SpatialNorm(out_channels, zq_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = activation(act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x, zq)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h, zq))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor
