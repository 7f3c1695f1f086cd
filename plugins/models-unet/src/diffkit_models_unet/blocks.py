"""The down, mid and up blocks of ``UNet2DModel``.

Every down block maps ``(hidden, temb, skip)`` to ``(hidden, residuals, skip)`` and every up
block maps ``(hidden, residuals, temb, skip)`` to ``(hidden, skip)``: ``skip`` is the 3-channel
image path of the NCSN++ skip blocks, which the other blocks pass through untouched. Module
and parameter names follow diffusers' blocks of the same name so state dicts match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .attention import SpatialSelfAttention
from .resnet import ResnetBlock2D, TimeNorm
from .sampling import Downsample2D, Upsample2D, fir_downsample, fir_upsample

SamplerKind = Literal["conv", "resnet"]

#: the residual scale of the NCSN++ skip blocks
SKIP_SCALE = math.sqrt(2.0)
#: GroupNorm groups of the skip blocks' attention layers, fixed by the architecture
SKIP_ATTENTION_GROUPS = 32
#: channels of the image path of the skip blocks
SKIP_IMAGE_CHANNELS = 3


@dataclass(frozen=True)
class BlockOptions:
    """Settings shared by every block of one UNet."""

    temb_channels: int
    eps: float
    act_fn: str
    dropout: float
    time_embedding_norm: TimeNorm
    #: GroupNorm groups of the resnets and attention of the non-skip blocks
    groups: int | None


def skip_groups(channels: int) -> int:
    """GroupNorm groups of the skip blocks: a quarter of the channels, at most 32."""
    return min(channels // 4, 32)


def heads_dim(head_dim: int | None, channels: int) -> int:
    """Per-head width: ``head_dim``, or one head over all ``channels`` when it is ``None``."""
    return channels if head_dim is None else head_dim


def block_resnet(opts: BlockOptions, in_channels: int, out_channels: int, **kwargs: Any) -> ResnetBlock2D:
    """A ResnetBlock2D with the UNet's shared settings; ``kwargs`` override or extend them."""
    kwargs.setdefault("groups", opts.groups)
    return ResnetBlock2D(
        in_channels,
        out_channels,
        opts.temb_channels,
        eps=opts.eps,
        act_fn=opts.act_fn,
        dropout=opts.dropout,
        time_embedding_norm=opts.time_embedding_norm,
        **kwargs,
    )


def up_resnet_inputs(in_channels: int, prev_output_channel: int, out_channels: int, num_layers: int) -> list[int]:
    """Input widths of an up block's resnets: running features plus the residual they take."""
    widths = []
    for i in range(num_layers):
        running = prev_output_channel if i == 0 else out_channels
        residual = in_channels if i == num_layers - 1 else out_channels
        widths.append(running + residual)
    return widths


# -- down ------------------------------------------------------------------------------
class _ResnetDownBlock(nn.Module):
    """Resnets (each followed by attention if ``attention``), then an optional downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        downsample: SamplerKind | None,
        downsample_padding: int = 1,
        attention: bool = False,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            block_resnet(opts, in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            SpatialSelfAttention(
                out_channels, heads_dim(head_dim, out_channels), norm_num_groups=opts.groups, eps=opts.eps
            )
            for _ in range(num_layers if attention else 0)
        )
        if downsample == "conv":
            self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=downsample_padding)])
        elif downsample == "resnet":
            self.downsamplers = nn.ModuleList([block_resnet(opts, out_channels, out_channels, resample="down")])
        else:
            self.downsamplers = None

    def forward(
        self, hidden: torch.Tensor, temb: torch.Tensor, skip: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        residuals: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            hidden = resnet(hidden, temb)
            if self.attentions:
                hidden = self.attentions[i](hidden)
            residuals += (hidden,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden = downsampler(hidden, temb) if isinstance(downsampler, ResnetBlock2D) else downsampler(hidden)
            residuals += (hidden,)
        return hidden, residuals, skip


class DownBlock2D(_ResnetDownBlock):
    """Resnets and a strided-conv downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_downsample: bool,
        downsample_padding: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            num_layers,
            opts,
            downsample="conv" if add_downsample else None,
            downsample_padding=downsample_padding,
        )


class ResnetDownsampleBlock2D(_ResnetDownBlock):
    """Resnets and a downsampling resnet (average pooling inside)."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, opts: BlockOptions, *, add_downsample: bool
    ) -> None:
        super().__init__(in_channels, out_channels, num_layers, opts, downsample="resnet" if add_downsample else None)


class AttnDownBlock2D(_ResnetDownBlock):
    """Resnet + self-attention pairs and a conv or resnet downsampler (``downsample_type``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_downsample: bool,
        downsample_type: SamplerKind = "conv",
        downsample_padding: int = 1,
        head_dim: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            num_layers,
            opts,
            downsample=downsample_type if add_downsample else None,
            downsample_padding=downsample_padding,
            attention=True,
            head_dim=head_dim,
        )


class _SkipDownBlock(nn.Module):
    """NCSN++ down block: resnets (optionally with attention), then a FIR-downsampling resnet
    plus the FIR-downsampled image path projected by ``skip_conv`` and added to the features."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_downsample: bool,
        attention: bool,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            width = in_channels if i == 0 else out_channels
            self.resnets.append(
                block_resnet(
                    opts,
                    width,
                    out_channels,
                    groups=skip_groups(width),
                    groups_out=skip_groups(out_channels),
                    output_scale_factor=SKIP_SCALE,
                )
            )
        self.attentions = nn.ModuleList(
            SpatialSelfAttention(
                out_channels,
                heads_dim(head_dim, out_channels),
                norm_num_groups=SKIP_ATTENTION_GROUPS,
                eps=opts.eps,
                rescale_output_factor=SKIP_SCALE,
            )
            for _ in range(num_layers if attention else 0)
        )
        if add_downsample:
            self.resnet_down = block_resnet(
                opts,
                out_channels,
                out_channels,
                groups=skip_groups(out_channels),
                output_scale_factor=SKIP_SCALE,
                use_in_shortcut=True,
                resample="down",
                fir=True,
            )
            self.skip_conv = nn.Conv2d(SKIP_IMAGE_CHANNELS, out_channels, kernel_size=1)
        else:
            self.resnet_down = None
            self.skip_conv = None

    def forward(
        self, hidden: torch.Tensor, temb: torch.Tensor, skip: torch.Tensor | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor | None]:
        residuals: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            hidden = resnet(hidden, temb)
            if self.attentions:
                hidden = self.attentions[i](hidden)
            residuals += (hidden,)
        if self.resnet_down is not None:
            hidden = self.resnet_down(hidden, temb)
            skip = fir_downsample(skip)
            hidden = self.skip_conv(skip) + hidden
            residuals += (hidden,)
        return hidden, residuals, skip


class SkipDownBlock2D(_SkipDownBlock):
    """NCSN++ down block without attention."""

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, opts: BlockOptions, *, add_downsample: bool
    ) -> None:
        super().__init__(in_channels, out_channels, num_layers, opts, add_downsample=add_downsample, attention=False)


class AttnSkipDownBlock2D(_SkipDownBlock):
    """NCSN++ down block with self-attention after each resnet."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_downsample: bool,
        head_dim: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            num_layers,
            opts,
            add_downsample=add_downsample,
            attention=True,
            head_dim=head_dim,
        )


# -- mid -------------------------------------------------------------------------------
class UNetMidBlock2D(nn.Module):
    """A resnet, then ``num_layers`` (attention, resnet) pairs at the lowest resolution."""

    def __init__(
        self,
        channels: int,
        opts: BlockOptions,
        *,
        head_dim: int | None,
        attn_groups: int | None,
        add_attention: bool = True,
        output_scale_factor: float = 1.0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            block_resnet(opts, channels, channels, output_scale_factor=output_scale_factor)
            for _ in range(num_layers + 1)
        )
        self.attentions = nn.ModuleList(
            SpatialSelfAttention(
                channels,
                heads_dim(head_dim, channels),
                norm_num_groups=attn_groups,
                eps=opts.eps,
                rescale_output_factor=output_scale_factor,
            )
            for _ in range(num_layers if add_attention else 0)
        )

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        hidden = self.resnets[0](hidden, temb)
        for i, resnet in enumerate(self.resnets[1:]):
            if self.attentions:
                hidden = self.attentions[i](hidden)
            hidden = resnet(hidden, temb)
        return hidden


# -- up --------------------------------------------------------------------------------
def _pop(residuals: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    return residuals[-1], residuals[:-1]


class _ResnetUpBlock(nn.Module):
    """Resnets over features concatenated with the matching down-path residuals (each followed
    by attention if ``attention``), then an optional upsampler."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        upsample: SamplerKind | None,
        attention: bool = False,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        widths = up_resnet_inputs(in_channels, prev_output_channel, out_channels, num_layers)
        self.resnets = nn.ModuleList(block_resnet(opts, width, out_channels) for width in widths)
        self.attentions = nn.ModuleList(
            SpatialSelfAttention(
                out_channels, heads_dim(head_dim, out_channels), norm_num_groups=opts.groups, eps=opts.eps
            )
            for _ in range(num_layers if attention else 0)
        )
        if upsample == "conv":
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels)])
        elif upsample == "resnet":
            self.upsamplers = nn.ModuleList([block_resnet(opts, out_channels, out_channels, resample="up")])
        else:
            self.upsamplers = None

    def forward(
        self,
        hidden: torch.Tensor,
        residuals: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        skip: torch.Tensor | None,
        upsample_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        for i, resnet in enumerate(self.resnets):
            residual, residuals = _pop(residuals)
            hidden = resnet(torch.cat([hidden, residual], dim=1), temb)
            if self.attentions:
                hidden = self.attentions[i](hidden)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                if isinstance(upsampler, ResnetBlock2D):
                    hidden = upsampler(hidden, temb)
                else:
                    hidden = upsampler(hidden, upsample_size)
        return hidden, skip


class UpBlock2D(_ResnetUpBlock):
    """Resnets and a nearest-neighbour + conv upsampler."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
    ) -> None:
        super().__init__(
            in_channels,
            prev_output_channel,
            out_channels,
            num_layers,
            opts,
            upsample="conv" if add_upsample else None,
        )


class ResnetUpsampleBlock2D(_ResnetUpBlock):
    """Resnets and an upsampling resnet (nearest-neighbour inside)."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
    ) -> None:
        super().__init__(
            in_channels,
            prev_output_channel,
            out_channels,
            num_layers,
            opts,
            upsample="resnet" if add_upsample else None,
        )


class AttnUpBlock2D(_ResnetUpBlock):
    """Resnet + self-attention pairs and a conv or resnet upsampler (``upsample_type``)."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
        upsample_type: SamplerKind = "conv",
        head_dim: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            prev_output_channel,
            out_channels,
            num_layers,
            opts,
            upsample=upsample_type if add_upsample else None,
            attention=True,
            head_dim=head_dim,
        )


class _SkipUpBlock(nn.Module):
    """NCSN++ up block: resnets over concatenated residuals, an optional single attention,
    then the image path: FIR-upsampled and increased by ``skip_conv(act(skip_norm(features)))``
    before a FIR-upsampling resnet."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
        attention: bool,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        for i in range(num_layers):
            running = prev_output_channel if i == 0 else out_channels
            residual = in_channels if i == num_layers - 1 else out_channels
            if attention:
                # diffusers' AttnSkipUpBlock2D computes ``running + residual // 4`` here; kept
                # because the group count changes the numbers of trained checkpoints.
                groups = min(running + residual // 4, 32)
            else:
                groups = skip_groups(running + residual)
            self.resnets.append(
                block_resnet(
                    opts,
                    running + residual,
                    out_channels,
                    groups=groups,
                    groups_out=skip_groups(out_channels),
                    output_scale_factor=SKIP_SCALE,
                )
            )
        self.attentions = nn.ModuleList(
            [
                SpatialSelfAttention(
                    out_channels,
                    heads_dim(head_dim, out_channels),
                    norm_num_groups=SKIP_ATTENTION_GROUPS,
                    eps=opts.eps,
                    rescale_output_factor=SKIP_SCALE,
                )
            ]
            if attention
            else []
        )
        if add_upsample:
            self.resnet_up = block_resnet(
                opts,
                out_channels,
                out_channels,
                groups=skip_groups(out_channels),
                groups_out=skip_groups(out_channels),
                output_scale_factor=SKIP_SCALE,
                use_in_shortcut=True,
                resample="up",
                fir=True,
            )
            self.skip_conv = nn.Conv2d(out_channels, SKIP_IMAGE_CHANNELS, kernel_size=3, padding=1)
            self.skip_norm = nn.GroupNorm(skip_groups(out_channels), out_channels, eps=opts.eps, affine=True)
            self.act = nn.SiLU()
        else:
            self.resnet_up = None
            self.skip_conv = None
            self.skip_norm = None
            self.act = None

    def forward(
        self,
        hidden: torch.Tensor,
        residuals: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        skip: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        for resnet in self.resnets:
            residual, residuals = _pop(residuals)
            hidden = resnet(torch.cat([hidden, residual], dim=1), temb)
        for attention in self.attentions:
            hidden = attention(hidden)

        image: torch.Tensor | int = fir_upsample(skip) if skip is not None else 0
        if self.resnet_up is not None:
            image = image + self.skip_conv(self.act(self.skip_norm(hidden)))
            hidden = self.resnet_up(hidden, temb)
        return hidden, image


class SkipUpBlock2D(_SkipUpBlock):
    """NCSN++ up block without attention."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
    ) -> None:
        super().__init__(
            in_channels,
            prev_output_channel,
            out_channels,
            num_layers,
            opts,
            add_upsample=add_upsample,
            attention=False,
        )


class AttnSkipUpBlock2D(_SkipUpBlock):
    """NCSN++ up block with one self-attention after its resnets."""

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        num_layers: int,
        opts: BlockOptions,
        *,
        add_upsample: bool,
        head_dim: int | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            prev_output_channel,
            out_channels,
            num_layers,
            opts,
            add_upsample=add_upsample,
            attention=True,
            head_dim=head_dim,
        )


DownBlockType = Literal[
    "DownBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D"
]
UpBlockType = Literal["UpBlock2D", "ResnetUpsampleBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"]
DownBlock = DownBlock2D | ResnetDownsampleBlock2D | AttnDownBlock2D | SkipDownBlock2D | AttnSkipDownBlock2D
UpBlock = UpBlock2D | ResnetUpsampleBlock2D | AttnUpBlock2D | SkipUpBlock2D | AttnSkipUpBlock2D

#: blocks that size their GroupNorms themselves and ignore ``norm_num_groups``
SKIP_BLOCKS = frozenset({"SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D"})


def build_down_block(
    block_type: DownBlockType,
    in_channels: int,
    out_channels: int,
    num_layers: int,
    opts: BlockOptions,
    *,
    add_downsample: bool,
    downsample_type: SamplerKind,
    downsample_padding: int,
    head_dim: int | None,
) -> DownBlock:
    """The down block named ``block_type``, given only the settings that block uses."""
    args = (in_channels, out_channels, num_layers, opts)
    match block_type:
        case "DownBlock2D":
            return DownBlock2D(*args, add_downsample=add_downsample, downsample_padding=downsample_padding)
        case "ResnetDownsampleBlock2D":
            return ResnetDownsampleBlock2D(*args, add_downsample=add_downsample)
        case "AttnDownBlock2D":
            return AttnDownBlock2D(
                *args,
                add_downsample=add_downsample,
                downsample_type=downsample_type,
                downsample_padding=downsample_padding,
                head_dim=head_dim,
            )
        case "SkipDownBlock2D":
            return SkipDownBlock2D(*args, add_downsample=add_downsample)
        case "AttnSkipDownBlock2D":
            return AttnSkipDownBlock2D(*args, add_downsample=add_downsample, head_dim=head_dim)
    raise ValueError(f"unknown down block type {block_type!r}")


def build_up_block(
    block_type: UpBlockType,
    in_channels: int,
    prev_output_channel: int,
    out_channels: int,
    num_layers: int,
    opts: BlockOptions,
    *,
    add_upsample: bool,
    upsample_type: SamplerKind,
    head_dim: int | None,
) -> UpBlock:
    """The up block named ``block_type``, given only the settings that block uses."""
    args = (in_channels, prev_output_channel, out_channels, num_layers, opts)
    match block_type:
        case "UpBlock2D":
            return UpBlock2D(*args, add_upsample=add_upsample)
        case "ResnetUpsampleBlock2D":
            return ResnetUpsampleBlock2D(*args, add_upsample=add_upsample)
        case "AttnUpBlock2D":
            return AttnUpBlock2D(*args, add_upsample=add_upsample, upsample_type=upsample_type, head_dim=head_dim)
        case "SkipUpBlock2D":
            return SkipUpBlock2D(*args, add_upsample=add_upsample)
        case "AttnSkipUpBlock2D":
            return AttnSkipUpBlock2D(*args, add_upsample=add_upsample, head_dim=head_dim)
    raise ValueError(f"unknown up block type {block_type!r}")
