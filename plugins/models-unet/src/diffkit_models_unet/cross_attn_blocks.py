"""The text-conditioned blocks of ``UNet2DConditionModel``: resnets each followed by a
:class:`SpatialTransformer` that attends to the encoder's tokens.

Module and parameter names follow diffusers' blocks of the same name so state dicts match.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import BlockOptions, block_resnet, up_resnet_inputs
from .sampling import Downsample2D, Upsample2D
from .spatial_transformer import SpatialTransformer


@dataclass(frozen=True)
class CrossAttnOptions:
    """Settings of the transformers of one cross-attention block."""

    heads: int
    context_dim: int
    #: transformer blocks per transformer: one count for all, or one per resnet
    layers: int | tuple[int, ...] = 1
    linear_projection: bool = False
    only_cross_attention: bool = False
    upcast_attention: bool = False

    def layers_at(self, index: int, count: int) -> int:
        """Transformer depth of the ``index``-th of ``count`` transformers."""
        if isinstance(self.layers, int):
            return self.layers
        if len(self.layers) < count:
            raise ValueError(
                f"transformer_layers_per_block gives {len(self.layers)} depths for a block with {count} "
                "transformers; give one per layer of that block"
            )
        return self.layers[index]


@dataclass(frozen=True)
class Conditioning:
    """What every transformer of one forward pass attends to.

    ``self_bias``/``context_bias``: additive ``(batch, 1, tokens)`` masks of the first and
    second attention of each transformer block.
    """

    context: torch.Tensor | None
    self_bias: torch.Tensor | None = None
    context_bias: torch.Tensor | None = None


def _transformers(channels: int, count: int, opts: BlockOptions, attn: CrossAttnOptions) -> nn.ModuleList:
    if opts.groups is None:
        raise ValueError("cross-attention blocks need GroupNorm groups (norm_num_groups)")
    return nn.ModuleList(
        SpatialTransformer(
            channels,
            attn.heads,
            channels // attn.heads,
            num_layers=attn.layers_at(i, count),
            context_dim=attn.context_dim,
            norm_num_groups=opts.groups,
            linear_projection=attn.linear_projection,
            only_cross_attention=attn.only_cross_attention,
            upcast_attention=attn.upcast_attention,
        )
        for i in range(count)
    )


def _attend(transformer: nn.Module, hidden: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    return transformer(hidden, cond.context, cond.self_bias, cond.context_bias)


class CrossAttnDownBlock2D(nn.Module):
    """(resnet, transformer) pairs, then an optional strided-conv downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        attn: CrossAttnOptions,
        *,
        add_downsample: bool,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            block_resnet(opts, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = _transformers(out_channels, num_layers, opts, attn)
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, padding=downsample_padding)]) if add_downsample else None
        )

    def forward(
        self,
        hidden: torch.Tensor,
        temb: torch.Tensor,
        cond: Conditioning,
        extra_residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``extra_residual`` (a T2I-Adapter feature) is added after the last pair."""
        residuals: tuple[torch.Tensor, ...] = ()
        last = len(self.resnets) - 1
        for i, (resnet, transformer) in enumerate(zip(self.resnets, self.attentions, strict=True)):
            hidden = _attend(transformer, resnet(hidden, temb), cond)
            if i == last and extra_residual is not None:
                hidden = hidden + extra_residual
            residuals += (hidden,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden = downsampler(hidden)
            residuals += (hidden,)
        return hidden, residuals


class UNetMidBlock2DCrossAttn(nn.Module):
    """A resnet, then (transformer, resnet) pairs at the lowest resolution."""

    def __init__(
        self,
        channels: int,
        opts: BlockOptions,
        attn: CrossAttnOptions,
        *,
        output_scale_factor: float = 1.0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            block_resnet(opts, channels, channels, output_scale_factor=output_scale_factor)
            for _ in range(num_layers + 1)
        )
        self.attentions = _transformers(channels, num_layers, opts, attn)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        hidden = self.resnets[0](hidden, temb)
        for transformer, resnet in zip(self.attentions, self.resnets[1:], strict=True):
            hidden = resnet(_attend(transformer, hidden, cond), temb)
        return hidden


class CrossAttnUpBlock2D(nn.Module):
    """(resnet, transformer) pairs over features concatenated with the matching down-path
    residuals, then an optional nearest-neighbour + conv upsampler."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        attn: CrossAttnOptions,
        *,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        widths = up_resnet_inputs(in_channels, prev_output_channel, out_channels, num_layers)
        self.resnets = nn.ModuleList(block_resnet(opts, width, out_channels) for width in widths)
        self.attentions = _transformers(out_channels, num_layers, opts, attn)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(
        self,
        hidden: torch.Tensor,
        residuals: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        cond: Conditioning,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        for resnet, transformer in zip(self.resnets, self.attentions, strict=True):
            residual, residuals = residuals[-1], residuals[:-1]
            hidden = _attend(transformer, resnet(torch.cat([hidden, residual], dim=1), temb), cond)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden = upsampler(hidden, upsample_size)
        return hidden
