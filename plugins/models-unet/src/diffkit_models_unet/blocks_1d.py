"""The blocks of Dance Diffusion's 1D UNet (``UNet1DModel`` with the default block types).

Every down block maps ``(hidden, temb)`` to ``(hidden, residual)``, every up block maps
``(hidden, residual, temb)`` to ``hidden`` and the mid block maps ``(hidden, temb)`` to
``hidden``; only ``DownBlock1DNoSkip`` reads ``temb`` (a ``(batch, channels, length)`` map
that it concatenates to its input). Resampling uses fixed anti-aliasing kernels kept as
persistent buffers, as in diffusers, so module and buffer names match its checkpoints.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from diffkit.attention import AttentionBackend, default_backend

KernelName = Literal["linear", "cubic", "lanczos3"]

#: the resampling filters by name (taps of a half-band low-pass filter, summing to 1)
RESAMPLE_KERNELS: dict[str, tuple[float, ...]] = {
    "linear": (1 / 8, 3 / 8, 3 / 8, 1 / 8),
    "cubic": (-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875),
    "lanczos3": (
        0.003689131001010537,
        0.015056144446134567,
        -0.03399861603975296,
        -0.066637322306633,
        0.13550527393817902,
        0.44638532400131226,
        0.44638532400131226,
        0.13550527393817902,
        -0.066637322306633,
        -0.03399861603975296,
        0.015056144446134567,
        0.003689131001010537,
    ),
}

#: channels per attention head of the Dance Diffusion blocks (heads = channels // 32)
ATTENTION_HEAD_CHANNELS = 32


def _depthwise(kernel: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    """The filter as a ``(channels, 1, taps)`` weight for a grouped convolution."""
    return kernel.to(device=like.device, dtype=like.dtype).view(1, 1, -1).expand(channels, 1, -1)


class KernelDownsample1D(nn.Module):
    """Halve the length: reflect-pad, then filter each channel with ``kernel`` at stride 2."""

    def __init__(self, kernel: KernelName = "linear", pad_mode: str = "reflect") -> None:
        super().__init__()
        taps = RESAMPLE_KERNELS[kernel]
        self.pad_mode = pad_mode
        self.pad = len(taps) // 2 - 1
        self.register_buffer("kernel", torch.tensor(taps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad, self.pad), self.pad_mode)
        channels = x.shape[1]
        return F.conv1d(x, _depthwise(self.kernel, channels, x), stride=2, groups=channels)


class KernelUpsample1D(nn.Module):
    """Double the length: reflect-pad, then a strided transposed convolution with ``2 * kernel``."""

    def __init__(self, kernel: KernelName = "linear", pad_mode: str = "reflect") -> None:
        super().__init__()
        taps = RESAMPLE_KERNELS[kernel]
        self.pad_mode = pad_mode
        self.pad = len(taps) // 2 - 1
        self.register_buffer("kernel", torch.tensor(taps) * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge = (self.pad + 1) // 2
        x = F.pad(x, (edge, edge), self.pad_mode)
        channels = x.shape[1]
        weight = _depthwise(self.kernel, channels, x)
        return F.conv_transpose1d(x, weight, stride=2, padding=2 * self.pad + 1, groups=channels)


class SelfAttention1D(nn.Module):
    """Multi-head self-attention over the positions of a ``(batch, channels, length)`` signal.

    GroupNorm over all channels, ``query``/``key``/``value`` projections into
    ``channels // 32`` heads, the product by :attr:`attention_backend`, ``proj_attn`` and the
    residual. Parameter names are those of diffusers' ``SelfAttention1d``.
    """

    def __init__(self, channels: int, heads: int | None = None) -> None:
        super().__init__()
        heads = channels // ATTENTION_HEAD_CHANNELS if heads is None else heads
        if heads < 1 or channels % heads:
            raise ValueError(
                f"a 1D attention layer over {channels} channels has {heads} head(s) ({ATTENTION_HEAD_CHANNELS} "
                "channels per head, rounded down); attention blocks need widths of at least "
                f"{ATTENTION_HEAD_CHANNELS} that their head count divides (check block_out_channels)"
            )
        self.heads = heads
        self.head_dim = channels // heads
        self.group_norm = nn.GroupNorm(1, channels)
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(channels, channels)
        self.value = nn.Linear(channels, channels)
        self.proj_attn = nn.Linear(channels, channels)
        self.attention_backend: AttentionBackend = default_backend()

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        tokens = self.group_norm(x).transpose(1, 2)
        query = self._split_heads(self.query(tokens))
        key = self._split_heads(self.key(tokens))
        value = self._split_heads(self.value(tokens))
        out = self.attention_backend(query, key, value, attn_mask=None, scale=self.head_dim**-0.5)
        out = out.transpose(1, 2).reshape(batch, length, channels).to(query.dtype)
        return self.proj_attn(out).transpose(1, 2) + x


class ResConvBlock(nn.Module):
    """Two 5-tap convolutions with single-group GroupNorm and GELU, plus a (1x1-projected) residual.

    ``is_last`` leaves out the second norm and activation (the network's output layer).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, is_last: bool = False) -> None:
        super().__init__()
        self.conv_skip = nn.Conv1d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        self.conv_1 = nn.Conv1d(in_channels, mid_channels, 5, padding=2)
        self.group_norm_1 = nn.GroupNorm(1, mid_channels)
        self.gelu_1 = nn.GELU()
        self.conv_2 = nn.Conv1d(mid_channels, out_channels, 5, padding=2)
        self.is_last = is_last
        if not is_last:
            self.group_norm_2 = nn.GroupNorm(1, out_channels)
            self.gelu_2 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.conv_skip is None else self.conv_skip(x)
        h = self.conv_2(self.gelu_1(self.group_norm_1(self.conv_1(x))))
        if not self.is_last:
            h = self.gelu_2(self.group_norm_2(h))
        return h + residual


def _res_convs(in_channels: int, mid_channels: int, out_channels: int, count: int, last: bool = False) -> nn.ModuleList:
    """``count`` ResConvBlocks: ``in -> mid``, ``mid -> mid``..., ``mid -> out``."""
    return nn.ModuleList(
        ResConvBlock(
            in_channels if i == 0 else mid_channels,
            mid_channels,
            out_channels if i == count - 1 else mid_channels,
            is_last=last and i == count - 1,
        )
        for i in range(count)
    )


def _attentions(mid_channels: int, out_channels: int, count: int) -> nn.ModuleList:
    return nn.ModuleList(SelfAttention1D(out_channels if i == count - 1 else mid_channels) for i in range(count))


class _ConvStack(nn.Module):
    """Three ResConvBlocks, each followed by self-attention when ``attention``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, *, attention: bool, last: bool = False):
        super().__init__()
        self.resnets = _res_convs(in_channels, mid_channels, out_channels, 3, last=last)
        if attention:
            self.attentions = _attentions(mid_channels, out_channels, 3)
        else:
            self.attentions = None

    def _run(self, hidden: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            hidden = resnet(hidden)
            if self.attentions is not None:
                hidden = self.attentions[i](hidden)
        return hidden


class DownBlock1D(_ConvStack):
    """Halve the length (cubic kernel), then three ResConvBlocks."""

    def __init__(self, out_channels: int, in_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(in_channels, mid_channels or out_channels, out_channels, attention=False)
        self.down = KernelDownsample1D("cubic")

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self._run(self.down(hidden))
        return hidden, hidden


class AttnDownBlock1D(_ConvStack):
    """Halve the length (cubic kernel), then three (ResConvBlock, self-attention) pairs."""

    def __init__(self, out_channels: int, in_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(in_channels, mid_channels or out_channels, out_channels, attention=True)
        self.down = KernelDownsample1D("cubic")

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self._run(self.down(hidden))
        return hidden, hidden


class DownBlock1DNoSkip(_ConvStack):
    """The first block: concatenate the time-feature map to the input, three ResConvBlocks, no resampling."""

    def __init__(self, out_channels: int, in_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(in_channels, mid_channels or out_channels, out_channels, attention=False)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if temb is None or temb.ndim != 3:
            raise ValueError(
                "DownBlock1DNoSkip concatenates a (batch, channels, length) time-feature map to its input: "
                "it needs use_timestep_embedding=False"
            )
        hidden = self._run(torch.cat([hidden, temb], dim=1))
        return hidden, hidden


class UpBlock1D(_ConvStack):
    """Three ResConvBlocks over the features concatenated with the skip, then double the length."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(2 * in_channels, mid_channels or in_channels, out_channels, attention=False)
        self.up = KernelUpsample1D("cubic")

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.up(self._run(torch.cat([hidden, residual], dim=1)))


class AttnUpBlock1D(_ConvStack):
    """Three (ResConvBlock, self-attention) pairs over features and skip, then double the length."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(2 * in_channels, mid_channels or out_channels, out_channels, attention=True)
        self.up = KernelUpsample1D("cubic")

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.up(self._run(torch.cat([hidden, residual], dim=1)))


class UpBlock1DNoSkip(_ConvStack):
    """The last block: three ResConvBlocks over features and skip, the final one without norm."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__(2 * in_channels, mid_channels or in_channels, out_channels, attention=False, last=True)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(torch.cat([hidden, residual], dim=1))


class UNetMidBlock1D(nn.Module):
    """Halve the length, six (ResConvBlock, self-attention) pairs, double the length back."""

    def __init__(self, mid_channels: int, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.down = KernelDownsample1D("cubic")
        self.resnets = _res_convs(in_channels, mid_channels, out_channels, 6)
        self.attentions = _attentions(mid_channels, out_channels, 6)
        self.up = KernelUpsample1D("cubic")

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.down(hidden)
        for resnet, attention in zip(self.resnets, self.attentions, strict=True):
            hidden = attention(resnet(hidden))
        return self.up(hidden)
