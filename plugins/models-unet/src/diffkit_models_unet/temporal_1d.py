"""The temporal-convolution blocks of ``UNet1DModel`` (Diffuser planning models, RL value functions).

They condition every residual block on a ``(batch, channels)`` time embedding, so they need
``use_timestep_embedding=True``. Interfaces are those of :mod:`.blocks_1d`: down blocks return
``(hidden, residual)``, up blocks take ``(hidden, residual, temb)``, mid and output blocks take
``(hidden, temb)``. Module names follow diffusers' blocks of the same name.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import activation

#: GroupNorm groups and kernel width of the temporal convolutions, fixed by the architecture
TEMPORAL_GROUPS = 8
TEMPORAL_KERNEL = 5


def _check_embedding(temb: torch.Tensor | None, where: str) -> torch.Tensor:
    if temb is None or temb.ndim != 2:
        raise ValueError(
            f"{where} needs a (batch, channels) time embedding: set use_timestep_embedding=True in the UNet1DModel config"
        )
    return temb


class Conv1dBlock(nn.Module):
    """Convolution, GroupNorm and Mish (or ``act_fn``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, groups: int = TEMPORAL_GROUPS, act_fn: str = "mish"
    ) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.group_norm = nn.GroupNorm(groups, out_channels)
        self.mish = activation(act_fn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mish(self.group_norm(self.conv1d(x)))


class ResidualTemporalBlock1D(nn.Module):
    """Two :class:`Conv1dBlock` with the projected time embedding added after the first, plus a residual."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        kernel_size: int = TEMPORAL_KERNEL,
        act_fn: str = "mish",
    ) -> None:
        super().__init__()
        self.conv_in = Conv1dBlock(in_channels, out_channels, kernel_size)
        self.conv_out = Conv1dBlock(out_channels, out_channels, kernel_size)
        self.time_emb_act = activation(act_fn)
        self.time_emb = nn.Linear(embed_dim, out_channels)
        self.residual_conv = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        t = self.time_emb(self.time_emb_act(_check_embedding(temb, type(self).__name__)))
        h = self.conv_out(self.conv_in(x) + t[:, :, None])
        return h + self.residual_conv(x)


def _temporal_stack(in_channels: int, out_channels: int, embed_dim: int, num_layers: int) -> nn.ModuleList:
    """``1 + num_layers`` residual temporal blocks: ``in -> out``, then ``out -> out``."""
    return nn.ModuleList(
        ResidualTemporalBlock1D(in_channels if i == 0 else out_channels, out_channels, embed_dim)
        for i in range(num_layers + 1)
    )


class Downsample1D(nn.Module):
    """Halve the length with a 3-tap stride-2 convolution."""

    def __init__(self, channels: int, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1D(nn.Module):
    """Double the length with a 4-tap stride-2 transposed convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(channels, channels, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownResnetBlock1D(nn.Module):
    """Residual temporal blocks (the skip is taken after them), then an optional strided-conv downsampler."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1, add_downsample: bool = True
    ) -> None:
        super().__init__()
        self.resnets = _temporal_stack(in_channels, out_channels, temb_channels, num_layers)
        self.downsample = Downsample1D(out_channels) if add_downsample else None

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
        residual = hidden
        if self.downsample is not None:
            hidden = self.downsample(hidden)
        return hidden, residual


class UpResnetBlock1D(nn.Module):
    """Residual temporal blocks over features concatenated with the skip, then an optional upsampler."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int = 1, add_upsample: bool = True
    ) -> None:
        super().__init__()
        self.resnets = _temporal_stack(2 * in_channels, out_channels, temb_channels, num_layers)
        self.upsample = Upsample1D(out_channels) if add_upsample else None

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = torch.cat((hidden, residual), dim=1)
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
        if self.upsample is not None:
            hidden = self.upsample(hidden)
        return hidden


class MidResTemporalBlock1D(nn.Module):
    """Residual temporal blocks at the lowest resolution, optionally followed by a downsampler."""

    def __init__(
        self, in_channels: int, out_channels: int, embed_dim: int, num_layers: int = 1, add_downsample: bool = False
    ) -> None:
        super().__init__()
        self.resnets = _temporal_stack(in_channels, out_channels, embed_dim, num_layers)
        self.downsample = Downsample1D(out_channels) if add_downsample else None

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
        if self.downsample is not None:
            hidden = self.downsample(hidden)
        return hidden


class ValueFunctionMidBlock1D(nn.Module):
    """Two (residual temporal block, downsampler) stages that halve the channels twice."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.res1 = ResidualTemporalBlock1D(in_channels, in_channels // 2, embed_dim)
        self.down1 = Downsample1D(out_channels // 2)
        self.res2 = ResidualTemporalBlock1D(in_channels // 2, in_channels // 4, embed_dim)
        self.down2 = Downsample1D(out_channels // 4)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.down1(self.res1(hidden, temb))
        return self.down2(self.res2(hidden, temb))


class OutConv1DBlock(nn.Module):
    """Output head: 5-tap convolution, GroupNorm, activation, 1x1 convolution to ``out_channels``."""

    def __init__(self, num_groups_out: int, out_channels: int, embed_dim: int, act_fn: str) -> None:
        super().__init__()
        self.final_conv1d_1 = nn.Conv1d(embed_dim, embed_dim, 5, padding=2)
        self.final_conv1d_gn = nn.GroupNorm(num_groups_out, embed_dim)
        self.final_conv1d_act = activation(act_fn)
        self.final_conv1d_2 = nn.Conv1d(embed_dim, out_channels, 1)

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.final_conv1d_act(self.final_conv1d_gn(self.final_conv1d_1(hidden)))
        return self.final_conv1d_2(hidden)


class OutValueFunctionBlock(nn.Module):
    """Value head: flatten the features, append the time embedding, and map to one value per sample."""

    def __init__(self, fc_dim: int, embed_dim: int, act_fn: str = "mish") -> None:
        super().__init__()
        self.final_block = nn.ModuleList(
            [nn.Linear(fc_dim + embed_dim, fc_dim // 2), activation(act_fn), nn.Linear(fc_dim // 2, 1)]
        )

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        batch = hidden.shape[0]
        temb = _check_embedding(temb, type(self).__name__)
        if temb.shape[0] == 1 and batch > 1:  # one timestep for the whole batch
            temb = temb.expand(batch, -1)
        hidden = torch.cat((hidden.reshape(batch, -1), temb), dim=-1)
        for layer in self.final_block:
            hidden = layer(hidden)
        return hidden
