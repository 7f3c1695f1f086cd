"""``ResnetBlock2D``: the time-conditioned residual block every UNet block is built from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from .activations import activation
from .sampling import avg_downsample, fir_downsample, fir_upsample, nearest_upsample

TimeNorm = Literal["default", "scale_shift"]
Resample = Literal["up", "down"]


def resampler(resample: Resample | None, fir: bool) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The weightless resize applied inside a resampling resnet, or ``None`` for none."""
    if resample == "up":
        return fir_upsample if fir else nearest_upsample
    if resample == "down":
        return fir_downsample if fir else avg_downsample
    return None


class ResnetBlock2D(nn.Module):
    """Two GroupNorm-activation-conv stages with the time embedding added (``default``) or
    applied as a scale and shift after the second norm (``scale_shift``), plus a residual.

    ``temb_channels=None`` builds the block without a time projection (the autoencoders'
    encoder and decoder). ``resample`` resizes both paths between the first norm and the first
    conv (nearest/average pooling, or the FIR filters with ``fir=True``). The residual goes
    through a 1x1 conv when the channel count changes or ``use_in_shortcut`` asks for it, and
    the sum is divided by ``output_scale_factor``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        *,
        groups: int,
        groups_out: int | None = None,
        eps: float = 1e-6,
        act_fn: str = "silu",
        dropout: float = 0.0,
        time_embedding_norm: TimeNorm = "default",
        output_scale_factor: float = 1.0,
        use_in_shortcut: bool | None = None,
        resample: Resample | None = None,
        fir: bool = False,
    ) -> None:
        super().__init__()
        if time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"time_embedding_norm must be 'default' or 'scale_shift', got {time_embedding_norm!r}")
        self.time_embedding_norm = time_embedding_norm
        self.output_scale_factor = output_scale_factor
        self.resample = resampler(resample, fir)

        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        proj_channels = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
        self.time_emb_proj = nn.Linear(temb_channels, proj_channels) if temb_channels is not None else None
        self.norm2 = nn.GroupNorm(groups if groups_out is None else groups_out, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = activation(act_fn)

        needs_shortcut = in_channels != out_channels if use_in_shortcut is None else use_in_shortcut
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if needs_shortcut else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.nonlinearity(self.norm1(x))
        if self.resample is not None:
            x = self.resample(x)
            h = self.resample(h)
        h = self.conv1(h)

        t = None
        if self.time_emb_proj is not None and temb is not None:
            t = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        if self.time_embedding_norm == "scale_shift":
            if t is None:
                raise ValueError("a scale_shift ResnetBlock2D needs a time embedding (temb_channels and temb)")
            scale, shift = t.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h if t is None else h + t)

        h = self.conv2(self.dropout(self.nonlinearity(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor
