"""``Decoder``: latent feature maps to images, shared by the autoencoders of this package."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from diffkit.outputs import BaseOutput

from .blocks import AUTOENCODER_EPS, AutoencoderMidBlock2D, LevelOptions, NormType, build_decoder_block
from .spatial_norm import SpatialNorm


@dataclasses.dataclass
class DecoderOutput(BaseOutput):
    """``sample``: the decoded images; ``commit_loss``: the quantizer's loss (VQ models only)."""

    sample: torch.Tensor
    commit_loss: torch.Tensor | None = None


class Decoder(nn.Module):
    """``conv_in``, a mid block with attention, one up block per width in reverse (all but the last
    double the size, each with ``layers_per_block + 1`` resnets), then norm, SiLU and ``conv_out``.

    ``norm_type="spatial"`` (MoVQ) conditions every norm on the quantized latents passed to
    :meth:`forward` as ``zq``; ``"group"`` uses plain GroupNorm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        up_block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: int,
        norm_num_groups: int,
        act_fn: str,
        *,
        norm_type: NormType = "group",
        mid_block_add_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm_type = norm_type
        zq_channels = in_channels if norm_type == "spatial" else None
        opts = LevelOptions(groups=norm_num_groups, act_fn=act_fn, zq_channels=zq_channels)
        reversed_widths = list(block_out_channels)[::-1]
        self.conv_in = nn.Conv2d(in_channels, reversed_widths[0], kernel_size=3, padding=1)
        self.mid_block = AutoencoderMidBlock2D(reversed_widths[0], opts, add_attention=mid_block_add_attention)
        self.up_blocks = nn.ModuleList(
            build_decoder_block(
                block_type,
                reversed_widths[max(i - 1, 0)],
                reversed_widths[i],
                layers_per_block + 1,
                opts,
                add_upsample=i != len(reversed_widths) - 1,
            )
            for i, block_type in enumerate(up_block_types)
        )
        if zq_channels is not None:
            self.conv_norm_out: nn.Module = SpatialNorm(reversed_widths[-1], zq_channels)
        else:
            self.conv_norm_out = nn.GroupNorm(norm_num_groups, reversed_widths[-1], eps=AUTOENCODER_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(reversed_widths[-1], out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.conv_in(sample)
        hidden = self.mid_block(hidden, zq)
        for block in self.up_blocks:
            hidden = block(hidden, zq)
        hidden = self.conv_norm_out(hidden, zq) if self.norm_type == "spatial" else self.conv_norm_out(hidden)
        return self.conv_out(self.conv_act(hidden))
