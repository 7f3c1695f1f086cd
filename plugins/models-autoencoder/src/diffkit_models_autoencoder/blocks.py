"""The resolution levels of the autoencoders' encoder and decoder.

Encoder blocks map ``hidden`` to ``hidden``; decoder blocks and the spatial mid block map
``(hidden, zq)`` to ``hidden``, where ``zq`` (the quantized latents) is only read by
``norm_type="spatial"`` decoders. The resnets, attention and resamplers are those of
:mod:`diffkit_models_unet`, without time conditioning; names follow diffusers' blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from diffkit_models_unet.attention import SpatialSelfAttention
from diffkit_models_unet.resnet import ResnetBlock2D
from diffkit_models_unet.sampling import Downsample2D, Upsample2D

from .spatial_norm import SpatialNorm, SpatialNormResnetBlock2D

EncoderBlockType = Literal["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
DecoderBlockType = Literal["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]
NormType = Literal["group", "spatial"]

#: GroupNorm epsilon of every encoder and decoder layer
AUTOENCODER_EPS = 1e-6


@dataclass(frozen=True)
class LevelOptions:
    """Settings shared by every block of one encoder or decoder."""

    groups: int
    act_fn: str
    #: channels of the quantized latents that condition a spatial-norm decoder; ``None``: group norm
    zq_channels: int | None = None


def plain_resnet(opts: LevelOptions, in_channels: int, out_channels: int) -> ResnetBlock2D:
    """A resnet without time conditioning (the autoencoders' basic block)."""
    return ResnetBlock2D(in_channels, out_channels, None, groups=opts.groups, eps=AUTOENCODER_EPS, act_fn=opts.act_fn)


def level_resnet(opts: LevelOptions, in_channels: int, out_channels: int) -> nn.Module:
    """A decoder resnet: spatially conditioned when ``opts.zq_channels`` is set, plain otherwise."""
    if opts.zq_channels is None:
        return plain_resnet(opts, in_channels, out_channels)
    return SpatialNormResnetBlock2D(in_channels, out_channels, opts.zq_channels, act_fn=opts.act_fn)


def level_attention(opts: LevelOptions, channels: int) -> SpatialSelfAttention:
    """Single-head self-attention, normalised by GroupNorm or (spatial decoders) by ``SpatialNorm``."""
    if opts.zq_channels is None:
        return SpatialSelfAttention(channels, channels, norm_num_groups=opts.groups, eps=AUTOENCODER_EPS)
    return SpatialSelfAttention(
        channels,
        channels,
        norm_num_groups=None,
        eps=AUTOENCODER_EPS,
        spatial_norm=SpatialNorm(channels, opts.zq_channels),
    )


def _apply(module: nn.Module, hidden: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
    """Run a resnet or attention layer, passing ``zq`` only to the spatially conditioned ones."""
    if isinstance(module, SpatialNormResnetBlock2D):
        return module(hidden, zq)
    if isinstance(module, SpatialSelfAttention):
        return module(hidden, zq) if module.spatial_norm is not None else module(hidden)
    return module(hidden)


class DownEncoderBlock2D(nn.Module):
    """Resnets (each followed by attention when ``attention``), then a strided-conv downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: LevelOptions,
        *,
        add_downsample: bool,
        downsample_padding: int = 0,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            plain_resnet(opts, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        if attention:
            self.attentions = nn.ModuleList(level_attention(opts, out_channels) for _ in range(num_layers))
        else:
            self.attentions = None
        if add_downsample:
            self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=downsample_padding)])
        else:
            self.downsamplers = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            hidden = resnet(hidden)
            if self.attentions is not None:
                hidden = self.attentions[i](hidden)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
        return hidden


class AttnDownEncoderBlock2D(DownEncoderBlock2D):
    """:class:`DownEncoderBlock2D` with single-head self-attention after every resnet."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: LevelOptions,
        *,
        add_downsample: bool,
        downsample_padding: int = 0,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            num_layers,
            opts,
            add_downsample=add_downsample,
            downsample_padding=downsample_padding,
            attention=True,
        )


class UpDecoderBlock2D(nn.Module):
    """Resnets (each followed by attention when ``attention``), then a nearest-neighbour conv upsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: LevelOptions,
        *,
        add_upsample: bool,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            level_resnet(opts, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        if attention:
            self.attentions = nn.ModuleList(level_attention(opts, out_channels) for _ in range(num_layers))
        else:
            self.attentions = None
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, hidden: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            hidden = _apply(resnet, hidden, zq)
            if self.attentions is not None:
                hidden = _apply(self.attentions[i], hidden, zq)
        if self.upsamplers is not None:
            hidden = self.upsamplers[0](hidden)
        return hidden


class AttnUpDecoderBlock2D(UpDecoderBlock2D):
    """:class:`UpDecoderBlock2D` with single-head self-attention after every resnet."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, opts: LevelOptions, *, add_upsample: bool
    ) -> None:
        super().__init__(in_channels, out_channels, num_layers, opts, add_upsample=add_upsample, attention=True)


class AutoencoderMidBlock2D(nn.Module):
    """A resnet, then (attention, resnet) at the lowest resolution; spatially conditioned in
    ``norm_type="spatial"`` decoders. Names match diffusers' ``UNetMidBlock2D``."""

    def __init__(self, channels: int, opts: LevelOptions, *, add_attention: bool = True) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(level_resnet(opts, channels, channels) for _ in range(2))
        self.attentions = nn.ModuleList([level_attention(opts, channels)] if add_attention else [])

    def forward(self, hidden: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        hidden = _apply(self.resnets[0], hidden, zq)
        if len(self.attentions):
            hidden = _apply(self.attentions[0], hidden, zq)
        return _apply(self.resnets[1], hidden, zq)


def build_encoder_block(
    block_type: str, in_channels: int, out_channels: int, num_layers: int, opts: LevelOptions, *, add_downsample: bool
) -> DownEncoderBlock2D:
    """The encoder block named ``block_type`` (downsampling with diffusers' bottom-right padding)."""
    cls = AttnDownEncoderBlock2D if block_type == "AttnDownEncoderBlock2D" else DownEncoderBlock2D
    return cls(in_channels, out_channels, num_layers, opts, add_downsample=add_downsample, downsample_padding=0)


def build_decoder_block(
    block_type: str, in_channels: int, out_channels: int, num_layers: int, opts: LevelOptions, *, add_upsample: bool
) -> UpDecoderBlock2D:
    """The decoder block named ``block_type``."""
    cls = AttnUpDecoderBlock2D if block_type == "AttnUpDecoderBlock2D" else UpDecoderBlock2D
    return cls(in_channels, out_channels, num_layers, opts, add_upsample=add_upsample)
