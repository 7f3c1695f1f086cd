"""Resampling layers and the FIR filters of the NCSN++ skip path.

``Downsample2D``/``Upsample2D`` hold the strided and nearest-neighbour convolutions of the
DDPM blocks; the FIR functions implement the ``(1, 3, 3, 1)`` binomial filters that the skip
blocks and FIR resnets use. They hold no weights, so the filter is built on the input's
device and dtype in every call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: the separable binomial filter of the FIR resampling layers
FIR_TAPS: tuple[int, ...] = (1, 3, 3, 1)


def fir_kernel(
    taps: Sequence[float] = FIR_TAPS, gain: float = 1.0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The 2D filter ``outer(taps, taps)`` normalised to sum ``gain``, in float32."""
    line = torch.tensor(taps, dtype=torch.float32, device=device)
    kernel = torch.outer(line, line)
    return kernel / kernel.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, *, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Zero-insert by ``up``, pad each spatial side by ``pad``, convolve each channel, keep every ``down``-th.

    ``pad`` is ``(before, after)`` for both height and width; both are non-negative here.
    """
    batch, channels, height, width = x.shape
    planes = x.reshape(batch * channels, 1, height, width)
    if up > 1:
        spread = planes.new_zeros(batch * channels, 1, height * up, width * up)
        spread[:, :, ::up, ::up] = planes
        planes = spread
    planes = F.pad(planes, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(device=x.device, dtype=x.dtype)[None, None]
    out = F.conv2d(planes, weight, stride=down)
    return out.reshape(batch, channels, out.shape[-2], out.shape[-1])


def fir_downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Halve height and width with the FIR filter (anti-aliased, gain 1)."""
    kernel = fir_kernel(device=x.device)
    excess = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, down=factor, pad=((excess + 1) // 2, excess // 2))


def fir_upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Double height and width with the FIR filter (gain ``factor**2`` keeps the signal level)."""
    kernel = fir_kernel(gain=factor**2, device=x.device)
    excess = kernel.shape[0] - factor
    return upfirdn2d(x, kernel, up=factor, pad=((excess + 1) // 2 + factor - 1, excess // 2))


def avg_downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve height and width by 2x2 average pooling."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


def nearest_upsample(x: torch.Tensor) -> torch.Tensor:
    """Double height and width by repeating pixels."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Downsample2D(nn.Module):
    """Strided 3x3 convolution that halves height and width.

    ``padding=0`` pads only the bottom and right edge by one pixel first, as the original
    TensorFlow DDPM did (``google/ddpm-*`` checkpoints use it).
    """

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour doubling followed by a 3x3 convolution.

    ``size`` resizes to that ``(height, width)`` instead of doubling: a UNet passes the size of
    the matching down-path feature map when the input was not divisible by its total stride.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size | None = None) -> torch.Tensor:
        resized = nearest_upsample(x) if size is None else F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(resized)
