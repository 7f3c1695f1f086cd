"""The K-diffusion blocks of ``UNet2DConditionModel`` (Stable Diffusion's x2 latent upscaler):
time-conditioned GroupNorm resnets, attention blocks without feed-forward, fixed-filter
resampling. Module and parameter names follow diffusers' blocks of the same name.

Down blocks give one skip tensor per resnet (``None`` where the block does not downsample);
up blocks concatenate only the last skip tensor they are handed, before their first resnet.
"""

from __future__ import annotations

import torch
from torch import nn

from .cross_attention import CrossAttention
from .cross_attn_blocks import Conditioning
from .k_resnet import K_GROUP_SIZE, AdaGroupNorm, ResnetBlockCondNorm2D, k_downsample, k_upsample


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)


def _to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return tokens.permute(0, 2, 1).reshape(tokens.shape[0], -1, height, width)


class KAttentionBlock(nn.Module):
    """Optional self-attention, then cross-attention over a layer-normalised context, each after
    a time-conditioned GroupNorm and with a residual; no feed-forward."""

    def __init__(
        self, dim: int, head_dim: int, *, context_dim: int, temb_channels: int, add_self_attention: bool
    ) -> None:
        super().__init__()
        heads = dim // head_dim
        groups = max(1, dim // K_GROUP_SIZE)
        self.add_self_attention = add_self_attention
        if add_self_attention:
            self.norm1 = AdaGroupNorm(temb_channels, dim, groups)
            self.attn1 = CrossAttention(dim, heads, head_dim, bias=True)
        self.norm2 = AdaGroupNorm(temb_channels, dim, groups)
        self.attn2 = CrossAttention(dim, heads, head_dim, context_dim=context_dim, bias=True, context_norm=True)

    def _attend(
        self, attention: CrossAttention, norm: AdaGroupNorm, x: torch.Tensor, temb: torch.Tensor, context, bias
    ) -> torch.Tensor:
        normed = norm(x, temb)
        height, width = normed.shape[2:]
        return _to_map(attention(_to_tokens(normed), context, bias), height, width) + x

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if self.add_self_attention:
            x = self._attend(self.attn1, self.norm1, x, temb, None, cond.self_bias)
        bias = cond.self_bias if cond.context is None else cond.context_bias
        return self._attend(self.attn2, self.norm2, x, temb, cond.context, bias)


def _k_resnet(in_channels: int, out_channels: int, temb: int, eps: float, act_fn: str, dropout: float, **kw):
    return ResnetBlockCondNorm2D(in_channels, out_channels, temb, eps=eps, act_fn=act_fn, dropout=dropout, **kw)


class KDownBlock2D(nn.Module):
    """Time-conditioned resnets, then an optional fixed-filter downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float = 0.0,
        add_downsample: bool,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _k_resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps, act_fn, dropout)
            for i in range(num_layers)
        )
        self.add_downsample = add_downsample

    def forward(
        self, hidden: torch.Tensor, temb: torch.Tensor, cond: Conditioning
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        residuals: tuple[torch.Tensor | None, ...] = ()
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
            residuals += (hidden,)
        if self.add_downsample:
            hidden = k_downsample(hidden)
        return hidden, residuals


class KCrossAttnDownBlock2D(nn.Module):
    """(time-conditioned resnet, attention block) pairs, then an optional fixed-filter
    downsampler; a block that does not downsample also self-attends and passes no skips."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float = 0.0,
        add_downsample: bool,
        head_dim: int,
        context_dim: int,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _k_resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps, act_fn, dropout)
            for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            KAttentionBlock(
                out_channels,
                head_dim,
                context_dim=context_dim,
                temb_channels=temb_channels,
                add_self_attention=not add_downsample,
            )
            for _ in range(num_layers)
        )
        self.add_downsample = add_downsample

    def forward(
        self, hidden: torch.Tensor, temb: torch.Tensor, cond: Conditioning
    ) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
        residuals: tuple[torch.Tensor | None, ...] = ()
        for resnet, attention in zip(self.resnets, self.attentions, strict=True):
            hidden = attention(resnet(hidden, temb), temb, cond)
            residuals += (hidden if self.add_downsample else None,)
        if self.add_downsample:
            hidden = k_downsample(hidden)
        return hidden, residuals


def _with_last_skip(hidden: torch.Tensor, residuals: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    skip = residuals[-1]
    return hidden if skip is None else torch.cat([hidden, skip], dim=1)


class KUpBlock2D(nn.Module):
    """The last skip concatenated, ``num_layers - 1`` resnets (the last one narrowing to
    ``in_channels``), then an optional fixed-filter upsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float = 0.0,
        add_upsample: bool,
    ) -> None:
        super().__init__()
        count = num_layers - 1
        self.resnets = nn.ModuleList(
            _k_resnet(
                2 * out_channels if i == 0 else out_channels,
                in_channels if i == count - 1 else out_channels,
                temb_channels,
                eps,
                act_fn,
                dropout,
                groups_out=out_channels // K_GROUP_SIZE,  # the block's width, also for a narrowing last resnet
            )
            for i in range(count)
        )
        self.add_upsample = add_upsample

    def forward(
        self, hidden: torch.Tensor, residuals: tuple[torch.Tensor | None, ...], temb: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        hidden = _with_last_skip(hidden, residuals)
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
        return k_upsample(hidden) if self.add_upsample else hidden


class KCrossAttnUpBlock2D(nn.Module):
    """The last skip concatenated, ``num_layers - 1`` (resnet, attention block) pairs, then an
    optional fixed-filter upsampler.

    As in diffusers, the block counts as the first one (no skip to concatenate, self-attention
    on) when ``in_channels``, ``out_channels`` and the time-embedding width are all equal, and
    its last resnet narrows to ``in_channels`` only when ``in_channels != out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float = 0.0,
        add_upsample: bool,
        head_dim: int,
        context_dim: int,
    ) -> None:
        super().__init__()
        first = in_channels == out_channels == temb_channels
        narrowing = in_channels != out_channels
        count = num_layers - 1
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()
        for i in range(count):
            last = i == count - 1
            self.resnets.append(
                _k_resnet(
                    (out_channels if first else 2 * out_channels) if i == 0 else out_channels,
                    out_channels,
                    temb_channels,
                    eps,
                    act_fn,
                    dropout,
                    conv_out_channels=in_channels if narrowing and last else None,
                )
            )
            self.attentions.append(
                KAttentionBlock(
                    in_channels if last else out_channels,
                    head_dim,
                    context_dim=context_dim,
                    temb_channels=temb_channels,
                    add_self_attention=first,
                )
            )
        self.add_upsample = add_upsample

    def forward(
        self, hidden: torch.Tensor, residuals: tuple[torch.Tensor | None, ...], temb: torch.Tensor, cond: Conditioning
    ) -> torch.Tensor:
        hidden = _with_last_skip(hidden, residuals)
        for resnet, attention in zip(self.resnets, self.attentions, strict=True):
            hidden = attention(resnet(hidden, temb), temb, cond)
        return k_upsample(hidden) if self.add_upsample else hidden


K_BLOCKS = frozenset({"KDownBlock2D", "KCrossAttnDownBlock2D", "KUpBlock2D", "KCrossAttnUpBlock2D"})
