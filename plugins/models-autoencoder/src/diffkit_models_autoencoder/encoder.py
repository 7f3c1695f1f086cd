"""``Encoder``: images to latent feature maps, shared by the autoencoders of this package."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocks import AUTOENCODER_EPS, AutoencoderMidBlock2D, LevelOptions, build_encoder_block


class Encoder(nn.Module):
    """``conv_in``, one down block per width (all but the last halve the size), a mid block with
    attention, then GroupNorm, SiLU and ``conv_out`` to ``out_channels`` (twice that with
    ``double_z``: the mean and log-variance of a Gaussian latent).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        *,
        double_z: bool = True,
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        opts = LevelOptions(groups=norm_num_groups, act_fn=act_fn)
        widths = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            build_encoder_block(
                block_type,
                widths[max(i - 1, 0)],
                widths[i],
                layers_per_block,
                opts,
                add_downsample=i != len(widths) - 1,
            )
            for i, block_type in enumerate(down_block_types)
        )
        self.mid_block = AutoencoderMidBlock2D(widths[-1], opts, add_attention=mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, widths[-1], eps=AUTOENCODER_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[-1], 2 * out_channels if double_z else out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(sample)
        for block in self.down_blocks:
            hidden = block(hidden)
        hidden = self.mid_block(hidden)
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
